"""World-writable entries of a commit's new layer: named in a warning, never changed.

GitLab's docker and Kubernetes executors check out with permissive modes, and a build that
copies with ``cp -a`` carries them into the image. The commit's layer is exactly what the build
made; this only says so: regular files writable by everyone, and directories writable by
everyone without the sticky bit (``/tmp``'s 1777 is fine).

One throwaway container of the committed image (no network, as root, so no directory hides its
entries) lists the world-writable entries whose inode changed after the build container started
(``find -newerct``, to the nanosecond of the engine's own clock): every entry of the new layer
is among them, since the build made it and the commit wrote it after that moment. On an
overlay storage driver these are exactly the layer's: the base's entries keep the inode change
times of their pull, which ended before the build container was even created. A driver that
copies the base into each layer (vfs) gives every old entry a new one, so there ``docker diff``
of the build container (the layer's added and changed entries) keeps those that are the
layer's; it runs only then, and only when the list is not empty: it walks the whole base on
some engines (half a second here). A ``find`` without ``-newerct`` (busybox) falls back to the
diff's paths, checked one by one.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from .client import DockerCli
from ...output.logs import get_logger

#: Shown at most; the count says how many more there are.
SHOWN = 20
#: Storage drivers (``GraphDriver.Name``, docker and podman) whose layers share the base's
#: inodes: an entry changed after the build started is the new layer's.
KEEP_BASE_INODES = frozenset({"overlay2", "overlay", "overlayfs", "fuse-overlayfs"})
WORLD_WRITABLE = "\\( -type f -perm -0002 -o -type d -perm -0002 ! -perm -1000 \\)"
END = "lwc-find-exit="
# POSIX sh and find only (a CMS base image has them; no Python). $1: seconds since the epoch.
RECENT = (f"find / -xdev {WORLD_WRITABLE} -newerct \"@$1\" -print 2>/dev/null; "
          f"echo \"{END}$?\"")
# Reads paths on stdin, prints those that are world-writable (find, tr and xargs only).
OF_PATHS = (f"tr '\\n' '\\0' | xargs -0 sh -c 'find \"$@\" -maxdepth 0 {WORLD_WRITABLE} "
            "-print 2>/dev/null; true' sh")


def diff(container: str) -> tuple[str, ...]:
    return ("diff", container)


def started(container: str) -> tuple[str, ...]:
    """When the build container started, on the engine's clock (JSON: docker and podman)."""
    return ("container", "inspect", "--format", "{{json .State.StartedAt}}", container)


def check(image: str, script: str, *args: str) -> tuple[str, ...]:
    """A throwaway container of the committed image running ``script``: it only reads."""
    return ("run", "--rm", "-i", "--network", "none", "--user", "0:0", "--entrypoint",
            "/bin/sh", image, "-c", script, "lwc-modes", *args)


def layer_paths(diff_output: str) -> list[str]:
    """The added (A) and changed (C) paths of ``docker diff``: the new layer's entries."""
    return [line[2:] for line in diff_output.splitlines() if line[:2] in ("A ", "C ")]


def epoch_time(inspected: str) -> str | None:
    """An RFC 3339 time as ``{{json ...}}`` prints it, as seconds since the epoch with every
    digit of its fraction (``find -newerct @...`` reads it so)."""
    try:
        text = json.loads(inspected)
    except ValueError:
        return None
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)",
                         text if isinstance(text, str) else "")
    if not found:
        return None
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    moment = datetime.fromisoformat(found.group(1) + zone)
    if moment.year < 2000:  # never started ("0001-01-01T00:00:00Z")
        return None
    return f"{int(moment.astimezone(timezone.utc).timestamp())}{found.group(2) or ''}"


def recent(docker: DockerCli, container: str, image: str) -> list[str] | None:
    """The image's world-writable entries changed since the build started; None when the
    engine or the image cannot tell (no start time, a ``find`` without ``-newerct``)."""
    inspected = docker.run(started(container), check=False)
    since = epoch_time(inspected.stdout.strip()) if inspected.ok else None
    if since is None:
        return None
    found = docker.run(check(image, RECENT, since), check=False,
                       shown=f"{docker.program} run --rm {image} <find the world-writable "
                             f"entries changed since the build started>")
    lines = found.stdout.splitlines()
    if not found.ok or not lines or lines[-1] != f"{END}0":
        return None
    return [line for line in lines[:-1] if line.strip()]


def of_paths(docker: DockerCli, image: str, paths: list[str]) -> list[str] | None:
    """The world-writable ones of ``paths`` in the image; None when it cannot tell."""
    found = docker.run(check(image, OF_PATHS), stdin="\n".join(paths) + "\n", check=False,
                       shown=f"{docker.program} run --rm {image} <find the world-writable of "
                             f"{len(paths)} paths>")
    if not found.ok:
        get_logger().debug("world_writable_unchecked", reason=found.stderr.strip()[-200:])
        return None
    return [line for line in found.stdout.splitlines() if line.strip()]


def warn_world_writable(docker: DockerCli, container: str, image: str,
                        driver: str = "") -> list[str]:
    """Log ``world_writable`` naming the layer's world-writable paths; return them.
    ``driver``: the image's storage driver (``GraphDriver.Name``), "" if unknown."""
    candidates = recent(docker, container, image)
    if candidates is not None and (not candidates or driver in KEEP_BASE_INODES):
        hits = sorted(candidates)
    else:
        listed = docker.run(diff(container), check=False)
        paths = layer_paths(listed.stdout) if listed.ok else []
        if candidates is None and paths:
            candidates = of_paths(docker, image, paths)
        layer = set(paths)
        hits = sorted(path for path in candidates or () if path in layer)
    if hits:
        get_logger().warning(
            "world_writable", count=len(hits), paths=hits[:SHOWN],
            more=max(0, len(hits) - SHOWN),
            why="anyone in a container of this image may change them (a checkout with "
                "permissive modes copied with cp -a?)",
            fix="copy without the checkout's modes (cp -R under umask 022, or chmod go-w in "
                "the build script); lwcontainer never changes a mode")
    return hits
