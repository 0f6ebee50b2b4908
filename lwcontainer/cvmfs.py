"""Where /cvmfs comes from (automounter, host, or nowhere), and the wait until it is there.

Each source is a context manager with ``volume()`` (how containers mount it), ``wait_mounted``
(cheap, on the source's side) and ``confirm(image)`` (as the build will see it). The host's
CVMFS and "none" are here; the automounter has a module of its own.
"""
from __future__ import annotations

import math
import os
import secrets
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager

from . import commands
from .background import Background
from .errors import CvmfsError
from .executor import Executor, Step
from .logs import get_logger
from .settings import Settings

POLL_S = 0.1

SHARED_MOUNT_FIX = (
    "the engine cannot propagate mounts from {mounts}: it is not on a shared mount. On the "
    "engine's host run 'mount --bind {mounts} {mounts} && mount --make-rshared {mounts}', or set "
    "LWC_CVMFS_MOUNTS to a directory on a shared mount"
)


def _non_empty(path: Path) -> bool:
    """A readable directory with something in it (listing it triggers an autofs mount)."""
    try:
        return any(os.scandir(path))
    except OSError:
        return False


def choose_source(s: Settings, engine_address: str | None) -> tuple[str, str]:
    """The effective LWC_CVMFS and why: ``auto`` takes the host's CVMFS when it has every
    repository and the engine is local (so it sees the same /cvmfs), else the automounter.
    ``engine_address`` is the engine actually used (a found dind service is remote)."""
    if s.cvmfs != "auto":
        return s.cvmfs, f"LWC_CVMFS={s.cvmfs}"
    if engine_address and not engine_address.startswith("unix://"):
        return "automounter", f"the engine is remote ({engine_address})"
    missing = [r for r in s.cvmfs_repos if not _non_empty(Path(s.cvmfs_host_dir) / r)]
    if missing:
        return "automounter", f"not under {s.cvmfs_host_dir} on this host: {', '.join(missing)}"
    return "host", f"every repository is under {s.cvmfs_host_dir} and the engine is local"


class CvmfsSource:
    source = "none"

    def __init__(self, settings: Settings, executor: Executor) -> None:
        self.s = settings
        self.x = executor
        self.log = get_logger()

    def __enter__(self) -> CvmfsSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def volume(self) -> commands.Argv:
        return commands.cvmfs_volume(self.source, self.s)

    def lease(self) -> ContextManager[None]:
        """Marks this source as in use while no build container exists yet."""
        return nullcontext()

    def wait_mounted(self, deadline: float, poll: Callable[[], None],
                     until: Background | None = None) -> None:
        """Phase 1: wait, cheaply, until the source itself has every repository (or, when
        the base image is already there, until ``until`` is done: the probe can take over)."""

    def confirm(self, image: str, deadline: float, poll: Callable[[], None],
                meanwhile: Callable[[], None] = lambda: None) -> None:
        """Phase 2: every repository readable and non-empty as the build will see it: one
        container of ``image`` with the build's mount watches from inside (mounts made later
        propagate into it), so the build can start right after the mount appears. An empty
        directory left behind does not count."""
        name = f"lwc-cvmfs-probe-{secrets.token_hex(4)}"
        seconds = max(1, math.ceil(deadline - time.monotonic()))
        ready = threading.Event()
        results: list = []

        def on_line(line: str) -> None:  # the build may start now, while the probe exits
            if line.strip() == commands.READY_MARK:
                ready.set()

        watcher = Background(lambda: results.append(self.x.run(Step(
            commands.watch_as_build(self.volume(), image, name, seconds, self.s.cvmfs_repos),
            stream=True, on_line=on_line, check=False, what="CVMFS probe",
            placeholder=commands.READY_MARK))), inline=self.x.dry_run)
        try:
            meanwhile()
            checked = time.monotonic()
            while not ready.wait(POLL_S) and not watcher.wait(0):
                poll()
                if time.monotonic() - checked > 1.0:
                    self.check_alive()
                    checked = time.monotonic()
            if not ready.is_set():
                watcher.join()
        except BaseException:
            self.x.run(Step(commands.remove(name), check=False))
            raise
        if not ready.is_set():
            done = results[0]
            self.raise_for_propagation(done.stderr)
            if not done.ok:
                raise CvmfsError(self.x.failure_message(Step((), what="CVMFS probe"), done))
            missing = [m for m in done.stdout.split() if m != commands.READY_MARK]
            if missing or commands.READY_MARK not in done.stdout:
                raise self.timed_out(missing or list(self.s.cvmfs_repos))
        self.log.info("cvmfs_ready", repos=list(self.s.cvmfs_repos), source=self.source)

    def check_alive(self) -> None:
        """Raise if the source has died while we wait for it."""

    def pause(self, deadline: float, delay: float, missing: list[str]) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out(missing)
        time.sleep(min(delay, remaining))

    def raise_for_propagation(self, stderr: str) -> None:
        if "not a shared mount" in stderr or "not a shared or slave mount" in stderr:
            where = self.s.cvmfs_host_dir if self.source == "host" else self.s.cvmfs_mounts
            raise CvmfsError(SHARED_MOUNT_FIX.format(mounts=where))

    hint = ""

    def timed_out(self, missing: list[str]) -> CvmfsError:
        return CvmfsError(f"CVMFS repositories not mounted after {self.s.cvmfs_timeout:g}s "
                          f"(LWC_CVMFS_TIMEOUT): {', '.join(missing)}; {self.hint}",
                          missing=missing)


class NoCvmfs(CvmfsSource):
    """LWC_CVMFS=none: for bases that need no CVMFS."""

    def confirm(self, image: str, deadline: float, poll: Callable[[], None],
                meanwhile: Callable[[], None] = lambda: None) -> None:
        meanwhile()


class HostCvmfs(CvmfsSource):
    """The host's own /cvmfs (LWC_CVMFS_HOST_DIR), bind-mounted read-only; no automounter."""

    source = "host"

    @property
    def hint(self) -> str:
        return f"check {self.s.cvmfs_host_dir} (LWC_CVMFS_HOST_DIR) on this host"

    def wait_mounted(self, deadline: float, poll: Callable[[], None],
                     until: Background | None = None) -> None:
        host = Path(self.s.cvmfs_host_dir)
        delay = POLL_S
        while True:
            poll()
            if until is not None and until.wait(0):
                return
            missing = [r for r in self.s.cvmfs_repos if not _non_empty(host / r)]
            if not missing:
                return
            self.pause(deadline, delay, missing)
            delay = min(delay * 2, 1.0)
