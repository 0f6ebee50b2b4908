"""World-writable entries of a commit's new layer: named in a warning, never changed.

GitLab's docker and Kubernetes executors check out with permissive modes, and a build that
copies with ``cp -a`` carries them into the image. The commit's layer is exactly what the build
made; this only says so: regular files writable by everyone, and directories writable by
everyone without the sticky bit (``/tmp``'s 1777 is fine). The paths come from ``docker diff``
of the build container (added and changed entries: what the layer holds); their modes from the
committed image itself, in a throwaway container with no network.
"""
from __future__ import annotations

from .client import DockerCli
from ...output.logs import get_logger

#: Shown at most; the count says how many more there are.
SHOWN = 20
# Reads the layer's paths on stdin, prints those that are world-writable: POSIX sh, find, tr
# and xargs only (a CMS base image has them; no Python).
FIND = ("tr '\\n' '\\0' | xargs -0 sh -c 'find \"$@\" -maxdepth 0 \\( -type f -perm -0002 "
        "-o -type d -perm -0002 ! -perm -1000 \\) -print 2>/dev/null; true' sh")


def diff(container: str) -> tuple[str, ...]:
    return ("diff", container)


def check(image: str) -> tuple[str, ...]:
    """A throwaway container of the committed image that prints the world-writable ones of
    the paths it reads on stdin (as root, so no directory hides its entries)."""
    return ("run", "--rm", "-i", "--network", "none", "--user", "0:0", "--entrypoint",
            "/bin/sh", image, "-c", FIND)


def layer_paths(diff_output: str) -> list[str]:
    """The added (A) and changed (C) paths of ``docker diff``: the new layer's entries."""
    return [line[2:] for line in diff_output.splitlines() if line[:2] in ("A ", "C ")]


def warn_world_writable(docker: DockerCli, container: str, image: str) -> list[str]:
    """Log ``world_writable`` naming the layer's world-writable paths; return them."""
    log = get_logger()
    listed = docker.run(diff(container), check=False)
    paths = layer_paths(listed.stdout) if listed.ok else []
    if not paths:
        return []
    found = docker.run(check(image), stdin="\n".join(paths) + "\n", check=False,
                       shown=f"docker run --rm {image} <find the world-writable of "
                             f"{len(paths)} paths>")
    if not found.ok:
        log.debug("world_writable_unchecked", reason=found.stderr.strip()[-200:])
        return []
    hits = sorted(line for line in found.stdout.splitlines() if line.strip())
    if hits:
        log.warning("world_writable", count=len(hits), paths=hits[:SHOWN],
                    more=max(0, len(hits) - SHOWN),
                    why="anyone in a container of this image may change them (a checkout "
                        "with permissive modes copied with cp -a?)",
                    fix="copy without the checkout's modes (cp -R under umask 022, or chmod "
                        "go-w in the build script); lwcontainer never changes a mode")
    return hits
