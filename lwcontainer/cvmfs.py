"""Where /cvmfs comes from (automounter, host, or nowhere), and the wait until it is there.

Each source is a context manager with ``volume()`` (how containers mount it), ``wait_mounted``
(cheap, on the source's side) and ``confirm(image)`` (as the build will see it).

One automounter (``LWC_AUTOMOUNTER_NAME``) serves every run on an engine. A run reuses a running
one; otherwise it claims the name with ``docker create``, unmounts whatever a dead automounter
left below the shared directory, then starts it. On exit it stops only an automounter it started
itself, and not while another run's build is still using it.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from structlog.contextvars import bound_contextvars

from . import commands, signals
from .background import Background
from .errors import CvmfsError
from .executor import Executor, Step, last_line
from .logs import get_logger
from .settings import Settings

CLAIM_WAIT_S = 30.0
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


def choose_source(s: Settings) -> tuple[str, str]:
    """The effective LWC_CVMFS and why: ``auto`` takes the host's CVMFS when it has every
    repository and the engine is local (so it sees the same /cvmfs), else the automounter."""
    if s.cvmfs != "auto":
        return s.cvmfs, f"LWC_CVMFS={s.cvmfs}"
    if s.docker_host and not s.docker_host.startswith("unix://"):
        return "automounter", f"the engine is remote ({s.docker_host})"
    missing = [r for r in s.cvmfs_repos if not _non_empty(Path(s.cvmfs_host_dir) / r)]
    if missing:
        return "automounter", f"not under {s.cvmfs_host_dir} on this host: {', '.join(missing)}"
    return "host", f"every repository is under {s.cvmfs_host_dir} and the engine is local"


def open_source(source: str, settings: Settings, executor: Executor) -> CvmfsSource:
    kinds = {"automounter": Automounter, "host": HostCvmfs, "none": NoCvmfs}
    return kinds[source](settings, executor)


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
        results: list = []
        watcher = Background(lambda: results.append(self.x.run(Step(
            commands.watch_as_build(self.volume(), image, name, seconds, self.s.cvmfs_repos),
            check=False, what="CVMFS probe"))), inline=self.x.dry_run)
        try:
            meanwhile()
            checked = time.monotonic()
            while not watcher.wait(POLL_S):
                poll()
                if time.monotonic() - checked > 1.0:
                    self.check_alive()
                    checked = time.monotonic()
            watcher.join()
        except BaseException:
            self.x.run(Step(commands.remove(name), check=False))
            raise
        done = results[0]
        self.raise_for_propagation(done.stderr)
        if not done.ok:
            raise CvmfsError(self.x.failure_message(Step((), what="CVMFS probe"), done))
        missing = done.stdout.split()
        if missing:
            raise self.timed_out(missing)
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


class Automounter(CvmfsSource):
    source = "automounter"

    def __init__(self, settings: Settings, executor: Executor) -> None:
        super().__init__(settings, executor)
        self.started = False

    def __enter__(self) -> Automounter:
        self.started = self.ensure()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            self.release()

    # -- state -------------------------------------------------------------------------------
    def status(self) -> str | None:
        done = self.x.run(Step(commands.container_inspect(self.s.automounter_name), check=False))
        if not done.ok or not done.stdout.strip():
            return None
        return json.loads(done.stdout)[0]["State"]["Status"]

    def ensure(self) -> bool:
        """Make sure the automounter runs; True if this call started it."""
        name = self.s.automounter_name
        status = self.status()
        if status == "running":
            self.log.info("automounter_reused", name=name)
            return False
        if status == "created" and self._wait_running(name):
            return False
        if status is not None:
            self.log.info("automounter_replaced", name=name, status=status)
            self.x.run(Step(commands.remove(name), check=False))
        return self._start()

    def image_command(self) -> tuple[str, ...]:
        """The automounter image's own entrypoint and command (pulled first if missing)."""
        image = str(self.s.automounter_image)
        inspect = Step(commands.image_inspect(image), check=False,
                       placeholder='[{"Config": {"Cmd": ["<the image\'s own command>"]}}]')
        done = self.x.run(inspect)
        if not done.ok:
            self.x.run(Step(commands.pull(image), retries=2, error=CvmfsError,
                            what=f"docker pull {image} (LWC_AUTOMOUNTER_IMAGE)"))
            done = self.x.run(inspect)
        config = json.loads(done.stdout)[0].get("Config") or {}
        command = tuple(config.get("Entrypoint") or ()) + tuple(config.get("Cmd") or ())
        if not command and not self.x.dry_run:
            raise CvmfsError(f"{image} (LWC_AUTOMOUNTER_IMAGE) has no entrypoint or command")
        return command

    def _start(self) -> bool:
        name = self.s.automounter_name
        created = self.x.run(Step(commands.automounter_create(self.s, self.image_command()),
                                  check=False, what="automounter create"))
        if not created.ok:
            if "already in use" in created.stderr:
                # Another run claimed the name a moment ago: use its automounter.
                self.log.info("automounter_claimed_elsewhere", name=name)
                if self._wait_running(name):
                    return False
            raise CvmfsError(self.x.failure_message(Step((), what="automounter create"), created))
        try:
            started = self.x.run(Step(commands.start(name), check=False, what="automounter start"))
            self.raise_for_propagation(started.stderr)
            if not started.ok:
                raise CvmfsError(self.x.failure_message(Step((), what="automounter start"),
                                                        started))
        except BaseException:
            self.x.run(Step(commands.remove(name), check=False))
            raise
        self.log.info("automounter_started", name=name, image=str(self.s.automounter_image))
        return True

    def report_stale_mounts(self) -> None:
        """Log what the entrypoint wrapper of an automounter this run started unmounted."""
        done = self.x.run(Step(commands.logs(self.s.automounter_name), check=False))
        mark = commands.STALE_MARK
        stale = [line.split(mark, 1)[1].strip() for line in (done.stdout + done.stderr).splitlines()
                 if mark in line]
        if stale:
            self.log.warning("stale_mounts_removed", mounts=stale,
                             reason="left by an automounter that died without unmounting")

    def _wait_running(self, name: str) -> bool:
        deadline = time.monotonic() + CLAIM_WAIT_S
        while time.monotonic() < deadline:
            status = self.status()
            if status == "running":
                self.log.info("automounter_reused", name=name)
                return True
            if status not in ("created", None) or self.x.dry_run:
                return False
            time.sleep(0.2)
        return False

    # -- readiness ---------------------------------------------------------------------------
    @property
    def hint(self) -> str:
        return f"see 'docker logs {self.s.automounter_name}'"

    @contextmanager
    def lease(self) -> Iterator[None]:
        """A created, never started container labelled like a build: while the base image is
        still being pulled, it tells other runs that this automounter is in use."""
        name = f"{self.s.automounter_name}-lease-{secrets.token_hex(4)}"
        self.x.run(Step(commands.lease_create(self.s, name), check=False))
        try:
            yield
        finally:
            self.x.run(Step(commands.remove(name), check=False))

    def wait_mounted(self, deadline: float, poll: Callable[[], None],
                     until: Background | None = None) -> None:
        """Poll inside the automounter (``docker exec``, tens of milliseconds) at a short,
        steady interval while the base image is pulled."""
        missing: list[str] = list(self.s.cvmfs_repos)
        while True:
            poll()
            if until is not None and until.wait(0):
                return
            probe = self.x.run(Step(commands.probe_in_automounter(self.s), check=False))
            if probe.ok:
                missing = probe.stdout.split()
                if not missing:
                    return
            else:
                self._raise_if_stopped(probe.stderr)
                return  # an image without /bin/sh: the confirming probe polls instead
            self.pause(deadline, POLL_S, missing)

    def check_alive(self) -> None:
        self._raise_if_stopped("")

    def _raise_if_stopped(self, stderr: str) -> None:
        status = self.status()
        if status != "running":
            logs = self.x.run(Step(("logs", "--tail", "5", self.s.automounter_name), check=False))
            raise CvmfsError(f"automounter {self.s.automounter_name} is {status or 'gone'}: "
                             f"{last_line(logs.stdout + logs.stderr) or last_line(stderr)}")

    # -- cleanup -----------------------------------------------------------------------------
    def release(self) -> None:
        name = self.s.automounter_name
        if not self.started:
            return
        self.report_stale_mounts()
        if self.s.keep_automounter:
            self.log.info("automounter_kept", name=name, reason="LWC_KEEP_AUTOMOUNTER is set")
            return
        others = self.x.run(Step(commands.active_builds(), check=False)).stdout.split()
        if others:
            self.log.info("automounter_kept", name=name,
                          reason=f"{len(others)} other build(s) still use it")
            return
        self.x.run(Step(commands.stop(name), check=False))
        removed = self.x.run(Step(commands.remove(name), check=False))
        if removed.ok:
            self.log.info("automounter_stopped", name=name)
        else:
            self.log.warning("automounter_not_removed", name=name,
                             error=self.x.masker(last_line(removed.stderr)))
        self.started = False
