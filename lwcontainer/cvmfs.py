"""The CVMFS automounter as a context manager, and the wait until CVMFS is really there.

One automounter (``LWC_AUTOMOUNTER_NAME``) serves every run on an engine. A run reuses a running
one; otherwise it claims the name with ``docker create``, unmounts whatever a dead automounter
left below the shared directory, then starts it. On exit it stops only an automounter it started
itself, and not while another run's build is still using it.
"""
from __future__ import annotations

import json
import time

from structlog.contextvars import bound_contextvars

from . import commands, signals
from .errors import CvmfsError
from .executor import Executor, Step, last_line
from .logs import get_logger
from .settings import Settings

CLAIM_WAIT_S = 30.0

SHARED_MOUNT_FIX = (
    "the engine cannot propagate mounts from {mounts}: it is not on a shared mount. On the "
    "engine's host run 'mount --bind {mounts} {mounts} && mount --make-rshared {mounts}', or set "
    "LWC_CVMFS_MOUNTS to a directory on a shared mount"
)


class Automounter:
    def __init__(self, settings: Settings, executor: Executor) -> None:
        self.s = settings
        self.x = executor
        self.started = False
        self.log = get_logger()

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

    def _start(self) -> bool:
        name = self.s.automounter_name
        created = self.x.run(Step(commands.automounter_create(self.s), check=False,
                                  what="automounter create"))
        if not created.ok:
            if "already in use" in created.stderr:
                # Another run claimed the name a moment ago: use its automounter.
                self.log.info("automounter_claimed_elsewhere", name=name)
                if self._wait_running(name):
                    return False
            raise CvmfsError(self.x.failure_message(Step((), what="automounter create"), created))
        try:
            purged = self.x.run(Step(commands.purge_stale_mounts(self.s), check=False,
                                     what="stale mount purge"))
            self._raise_for_propagation(purged.stderr)
            if purged.ok and purged.stdout.strip():
                self.log.warning("stale_mounts_removed", mounts=purged.stdout.split())
            started = self.x.run(Step(commands.start(name), check=False, what="automounter start"))
            self._raise_for_propagation(started.stderr)
            if not started.ok:
                raise CvmfsError(self.x.failure_message(Step((), what="automounter start"), started))
        except BaseException:
            self.x.run(Step(commands.remove(name), check=False))
            raise
        self.log.info("automounter_started", name=name, image=str(self.s.automounter_image))
        return True

    def _raise_for_propagation(self, stderr: str) -> None:
        if "not a shared mount" in stderr:
            raise CvmfsError(SHARED_MOUNT_FIX.format(mounts=self.s.cvmfs_mounts))

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
    def wait_ready(self, image: str) -> None:
        """Wait until every repository is a readable, non-empty directory, first as the
        automounter sees it (cheap, ``docker exec``), then once as the build will (``image``
        with the same rslave mount). An empty directory left behind does not count."""
        repos = self.s.cvmfs_repos
        deadline = time.monotonic() + self.s.cvmfs_timeout
        delay = 0.1
        exec_works = True
        missing: list[str] = list(repos)
        while True:
            if exec_works:
                probe = self.x.run(Step(commands.probe_in_automounter(self.s), check=False))
                if probe.ok:
                    missing = probe.stdout.split()
                else:
                    self._raise_if_stopped(probe.stderr)
                    exec_works = False  # an image without /bin/sh: probe as the build only
            if not exec_works or not missing:
                confirm = self.x.run(Step(commands.probe_as_build(self.s, image), check=False,
                                          what="CVMFS probe"))
                self._raise_for_propagation(confirm.stderr)
                if confirm.ok:
                    missing = confirm.stdout.split()
                    if not missing:
                        self.log.info("cvmfs_ready", repos=list(repos))
                        return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CvmfsError(
                    f"CVMFS repositories not mounted after {self.s.cvmfs_timeout:g}s "
                    f"(LWC_CVMFS_TIMEOUT): {', '.join(missing)}; see 'docker logs "
                    f"{self.s.automounter_name}'", missing=missing)
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 2.0)

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
