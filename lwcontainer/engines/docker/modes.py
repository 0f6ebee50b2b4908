"""World-writable entries of a commit's new layer: named in a warning, never changed.

GitLab's docker and Kubernetes executors check out with permissive modes, and a build that
copies with ``cp -a`` carries them into the image. The commit's layer is exactly what the build
made; this only says so: regular files writable by everyone, and directories writable by
everyone without the sticky bit (``/tmp``'s 1777 is fine).

Where the engine keeps the build container's changes in a directory of their own (an overlay
storage driver: ``GraphDriver.Data.UpperDir``), that directory is the layer ``docker commit``
writes. A ``LayerCheck`` container of FROM, started while the build runs (once the build
container shows it runs: not on the way of its start), mounts it read-only
(outside PATH) and waits on its stdin: released the moment the build succeeds, it lists the
layer's world-writable entries beside the commit and the push (a container's start is not on
that path). Elsewhere (vfs, which copies the base into every layer), or
when that check cannot tell, the paths come from ``docker diff`` of the build container (added
and changed entries) and their modes from the committed image, in a throwaway container: slower
(``docker diff`` walks the whole base), still beside the push. Every container here has no
network, runs as root with one capability, past permission bits (no directory hides its
entries), in /, only reads, and is limited by LWC_DOCKER_TIMEOUT.
"""
from __future__ import annotations

import json
from concurrent.futures import Executor as Pool, Future, wait

from structlog.contextvars import bound_contextvars

from . import commands, owner
from .client import DockerCli
from ... import signals
from ...output.logs import get_logger
from ...pools import wait_any

#: Shown at most; the count says how many more there are.
SHOWN = 20
WORLD_WRITABLE = "\\( -type f -perm -0002 -o -type d -perm -0002 ! -perm -1000 \\)"
LAYER = "/lwc-layer"  # where the check container mounts the build container's layer
END = "lwc-find-exit="
QUIT_S = 2.0  # how long a check whose stdin has ended gets to exit by itself
# POSIX sh and find only (a CMS base image has them; no Python); NUL after each path, so that
# a name with a newline in it stays one name; the exit status last.
IN_LAYER = f"cd {LAYER} && find . -mindepth 1 {WORLD_WRITABLE} -print0; echo \"{END}$?\""
GO = "go"
# Waits for GO on stdin (the build succeeded); its end without GO: nothing to read, exit.
GATED = f'read -r go && [ "$go" = {GO} ] || exit 0; {IN_LAYER}'
# Reads paths on stdin, prints those that are world-writable (find, tr and xargs only).
OF_PATHS = (f"tr '\\n' '\\0' | xargs -0 sh -c 'find \"$@\" -maxdepth 0 {WORLD_WRITABLE} "
            "-print 2>/dev/null; true' sh")
# Where no directory hides its entries and nothing else is touched: root with one capability of
# the engine's default set, past any file's and directory's permission bits (DAC_OVERRIDE; the
# layer is mounted read-only). Not DAC_READ_SEARCH: outside the default set, it opens
# open_by_handle_at, a known way to any file of the host's file system. No network, no new
# privileges, in / (never the image's WORKDIR: a runtime's start there is an old way out).
READER = ("--network", "none", "--user", "0:0", "--cap-drop", "ALL",
          "--cap-add", "DAC_OVERRIDE", "--security-opt", "no-new-privileges",
          "--workdir", "/", "--entrypoint", "/bin/sh")
# The layer directory carries the build container's own SELinux label: the check container,
# FROM's own find on a read-only mount, reads it unconfined.
UNLABELLED = ("--security-opt", "label=disable")


def graph_driver(container: str) -> tuple[str, ...]:
    return ("container", "inspect", "--format", "{{json .GraphDriver}}", container)


def upper_dir(inspected: str) -> str | None:
    """The directory holding a container's own changes, from ``{{json .GraphDriver}}``."""
    try:
        driver = json.loads(inspected)
    except ValueError:
        return None
    found = ((driver or {}).get("Data") or {}).get("UpperDir") if isinstance(driver, dict) \
        else None
    return found if isinstance(found, str) and found.startswith("/") else None


def layer_check_create(name: str, image: str, upper: str, labels: commands.Argv) -> tuple[str, ...]:
    """Removed by the engine once it has run (``--rm``); labelled like a build, so that one a
    killed run left is removed as an orphan."""
    return ("create", "--rm", "--interactive", "--name", name,
            "--label", f"{commands.BUILD_ROLE_LABEL}=build", *labels, *READER, *UNLABELLED,
            "-v", f"{upper}:{LAYER}:ro", image, "-c", GATED)


def layer_check_start(name: str) -> tuple[str, ...]:
    return ("start", "--attach", "--interactive", name)


def diff(container: str) -> tuple[str, ...]:
    return ("diff", container)


def of_paths_run(image: str) -> tuple[str, ...]:
    """A throwaway container of the committed image that prints the world-writable ones of
    the paths it reads on stdin."""
    return ("run", "--rm", "-i", *READER, image, "-c", OF_PATHS)


def layer_paths(diff_output: str) -> list[str]:
    """The added (A) and changed (C) paths of ``docker diff``: the new layer's entries."""
    return [line[2:] for line in diff_output.splitlines() if line[:2] in ("A ", "C ")]


def found_in_layer(output: str) -> list[str] | None:
    """The paths the layer check printed (``./x`` -> ``/x``); None unless its find finished."""
    *paths, end = output.split("\0")
    if end.strip() != f"{END}0":
        return None
    return [path[1:] for path in paths if path.startswith("./")]


class LayerCheck:
    """The check container of the build container's layer, as a context manager: on enter it
    is created and started in the background (where the engine names the layer's directory),
    and waits; ``release()`` (the build has succeeded) lets it read the layer, and the engine
    removes it when it exits (``--rm``). On exit, a check never released has its stdin ended
    (it exits reading nothing); one still there after QUIT_S, or still running when the run is
    cut short, is removed: always before the build container it reads."""

    def __init__(self, docker: DockerCli, container: str, image: str, pool: Pool,
                 after: Future | None = None) -> None:
        self.docker = docker
        self.container = container
        self.image = image
        self.pool = pool
        self.after = after  # made and started once this is done (the build container runs)
        self.name = f"{container}-modes"
        self.gate: Future[str] = Future()  # its stdin: GO once the build has succeeded
        self.ran: Future[list[str] | None] | None = None
        self.attempted = False  # a create was asked for: the container may exist
        self.gone = False  # it ran to its end, and the engine removed it (--rm)

    def __enter__(self) -> LayerCheck:
        self.ran = self.pool.submit(self._run)
        return self

    def _run(self) -> list[str] | None:
        if self.after is not None:  # not on the way of the build container's own start
            wait_any(self.after, self.gate)
        if self.gate.cancelled():
            return None
        inspected = self.docker.run(graph_driver(self.container), check=False)
        upper = upper_dir(inspected.stdout.strip()) if inspected.ok else None
        if upper is None or self.gate.cancelled():
            return None
        self.attempted = True
        made = self.docker.run(layer_check_create(self.name, self.image, upper,
                                                  owner.labels()), check=False)
        if not made.ok:
            return None
        done = self.docker.run(layer_check_start(self.name), stdin=self.gate, check=False,
                               what="world-writable check",
                               timeout=self.docker.timeouts.get("engine"),
                               timeout_setting="LWC_DOCKER_TIMEOUT")
        self.gone = self.gone or done.ok
        found = found_in_layer(done.stdout) if done.ok and self.released else None
        if found is None:
            get_logger().debug("layer_check_unused", returncode=done.returncode,
                               reason=done.stderr.strip()[-200:])
        return found

    @property
    def released(self) -> bool:
        return self.gate.done() and not self.gate.cancelled()

    def release(self) -> None:
        """The build has succeeded: read the layer now, beside whatever comes next."""
        self.gate.set_result(GO + "\n")

    def result(self) -> list[str] | None:
        """The layer's world-writable paths; None when this check could not tell."""
        if not self.released:
            return None
        try:
            return self.ran.result()
        except Exception as exc:  # noqa: BLE001 - the other way still tells
            get_logger().debug("layer_check_unused", reason=str(exc)[-200:])
            return None

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            self.gate.cancel()  # never released: its stdin ends, and it exits reading nothing
            if exc_type is not None or not self.released:
                wait((self.ran,), timeout=QUIT_S)
                if not self.ran.done():
                    self._remove()  # still there, and nobody waits for its answer
            wait((self.ran,))
            if self.attempted and not self.gone:
                self._remove()

    def _remove(self) -> None:
        removed = self.docker.remove(self.name, check=False)
        self.gone = self.gone or removed.ok


def world_writable(docker: DockerCli, container: str, image: str,
                   check: LayerCheck | None) -> list[str]:
    """The layer's world-writable paths: from the layer check where it ran, else from
    ``docker diff`` and the committed image."""
    found = check.result() if check is not None else None
    if found is not None:
        return sorted(found)
    listed = docker.run(diff(container), check=False)
    paths = layer_paths(listed.stdout) if listed.ok else []
    if not paths:
        return []
    checked = docker.run(of_paths_run(image), stdin="\n".join(paths) + "\n", check=False,
                         timeout=docker.timeouts.get("engine"),
                         timeout_setting="LWC_DOCKER_TIMEOUT",
                         shown=f"{docker.program} run --rm {image} <find the world-writable "
                               f"of {len(paths)} paths>")
    if not checked.ok:
        get_logger().debug("world_writable_unchecked", reason=checked.stderr.strip()[-200:])
        return []
    layer = set(paths)
    return sorted(line for line in checked.stdout.splitlines() if line in layer)


def warn_world_writable(docker: DockerCli, container: str, image: str,
                        check: LayerCheck | None = None) -> list[str]:
    """Log ``world_writable`` naming the layer's world-writable paths; return them."""
    hits = world_writable(docker, container, image, check)
    if hits:
        get_logger().warning(
            "world_writable", count=len(hits), paths=hits[:SHOWN],
            more=max(0, len(hits) - SHOWN),
            why="anyone in a container of this image may change them (a checkout with "
                "permissive modes copied with cp -a?)",
            fix="copy without the checkout's modes (cp -R under umask 022, or chmod go-w in "
                "the build script); lwcontainer never changes a mode")
    return hits
