"""The CVMFS automounter as a context manager: one (``LWC_AUTOMOUNTER_NAME``) serves every run on
an engine. A run reuses a running one; otherwise it claims the name with ``docker create`` and
starts it with its entrypoint wrapped, so that whatever a dead automounter left mounted below the
shared directory is unmounted first. On exit it stops only an automounter it started itself, and
not while another run's build (or lease) container still exists.
"""
from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Iterator

from structlog.contextvars import bound_contextvars

from . import commands
from ... import signals
from .client import DockerCli
from .cvmfs import POLL_S, CvmfsSource, settled
from .failures import pull_failure, worth_retrying_pull
from ...config.settings import Settings
from ...errors import CvmfsError
from ...executor import last_line, tail_lines

CLAIM_WAIT_S = 30.0


class Automounter(CvmfsSource):
    source = "automounter"

    def __init__(self, settings: Settings, docker: DockerCli) -> None:
        super().__init__(settings, docker)
        self.started = False

    def __enter__(self) -> Automounter:
        self.started = self.ensure()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            self.release()

    # -- state -------------------------------------------------------------------------------
    def status(self) -> str | None:
        done = self.x.run(self.docker.step(commands.container_inspect(self.s.automounter_name), check=False))
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
            self.x.run(self.docker.step(commands.remove(name), check=False))
        return self._start()

    def image_command(self) -> tuple[str, ...]:
        """The automounter image's own entrypoint and command (pulled first if missing)."""
        image = str(self.s.automounter_image)
        inspect = self.docker.step(commands.image_inspect(image), check=False,
                       placeholder='[{"Config": {"Cmd": ["<the image\'s own command>"]}}]')
        done = self.x.run(inspect)
        if not done.ok:
            pulled = self.docker.run(commands.pull(image), retries=2, check=False,
                                     retry_if=worth_retrying_pull,
                                     what=f"docker pull {image} (LWC_AUTOMOUNTER_IMAGE)")
            if not pulled.ok:
                raise pull_failure("LWC_AUTOMOUNTER_IMAGE", image, pulled, logged_in=False)
            done = self.x.run(inspect)
        config = json.loads(done.stdout)[0].get("Config") or {}
        command = tuple(config.get("Entrypoint") or ()) + tuple(config.get("Cmd") or ())
        if not command and not self.x.dry_run:
            raise CvmfsError(f"{image} (LWC_AUTOMOUNTER_IMAGE) has no entrypoint or command")
        return command

    def _start(self) -> bool:
        name = self.s.automounter_name
        created = self.x.run(self.docker.step(commands.automounter_create(self.s, self.image_command()),
                                  check=False, what="automounter create"))
        if not created.ok:
            if "already in use" in created.stderr:
                # Another run claimed the name a moment ago: use its automounter.
                self.log.info("automounter_claimed_elsewhere", name=name)
                if self._wait_running(name):
                    return False
            raise CvmfsError(self.x.failure_message(self.docker.step((), what="automounter "
                                                                          "create"), created))
        try:
            started = self.x.run(self.docker.step(commands.start(name), check=False, what="automounter start"))
            self.raise_for_propagation(started.stderr)
            if not started.ok:
                raise CvmfsError(self.x.failure_message(self.docker.step((), what="automounter "
                                                                              "start"),
                                                        started))
        except BaseException:
            self.x.run(self.docker.step(commands.remove(name), check=False))
            raise
        self.log.info("automounter_started", name=name, image=str(self.s.automounter_image))
        return True

    def report_stale_mounts(self) -> None:
        """Log what the entrypoint wrapper of an automounter this run started unmounted."""
        done = self.x.run(self.docker.step(commands.logs(self.s.automounter_name), check=False))
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
        self.x.run(self.docker.step(commands.lease_create(self.s, name), check=False))
        try:
            yield
        finally:
            self.x.run(self.docker.step(commands.remove(name), check=False))

    def wait_mounted(self, deadline: float, pending: Future) -> None:
        """Poll inside the automounter (``docker exec``, tens of milliseconds) at a short,
        steady interval while the base image is pulled."""
        missing: list[str] = list(self.s.cvmfs_repos)
        while True:
            if settled(pending):
                return
            probe = self.x.run(self.docker.step(commands.probe_in_automounter(self.s), check=False))
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
            logs = self.docker.run(commands.logs(self.s.automounter_name, tail=5), check=False)
            raise CvmfsError(f"automounter {self.s.automounter_name} is {status or 'gone'}: "
                             f"{tail_lines(logs.stdout + logs.stderr) or tail_lines(stderr)}")

    # -- cleanup -----------------------------------------------------------------------------
    def release(self) -> None:
        name = self.s.automounter_name
        if not self.started:
            return
        self.report_stale_mounts()
        if self.s.keep_automounter:
            self.log.info("automounter_kept", name=name, reason="LWC_KEEP_AUTOMOUNTER is set")
            return
        others = self.x.run(self.docker.step(commands.active_builds(), check=False)).stdout.split()
        if others:
            self.log.info("automounter_kept", name=name,
                          reason=f"{len(others)} other build(s) still use it")
            return
        self.x.run(self.docker.step(commands.stop(name), check=False))
        removed = self.x.run(self.docker.step(commands.remove(name), check=False))
        if removed.ok:
            self.log.info("automounter_stopped", name=name)
        else:
            self.log.warning("automounter_not_removed", name=name,
                             error=self.x.masker(last_line(removed.stderr)))
        self.started = False
