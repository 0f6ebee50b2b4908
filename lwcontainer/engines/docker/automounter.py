"""The CVMFS automounter as a context manager: one (``LWC_AUTOMOUNTER_NAME``) serves every run on
an engine. A run reuses a running one; otherwise it starts one under the name (``docker run
--detach``, labelled with the run as its owner) with its entrypoint wrapped, so that whatever a
dead automounter left mounted below the shared directory is unmounted first. On exit it stops
only an automounter it started itself, and not while another run's build (or lease) container
still exists.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Iterator

from structlog.contextvars import bound_contextvars

from . import commands, owner
from ... import signals
from .client import DockerCli
from .cvmfs import MAX_POLL_S, POLL_S, CvmfsSource, settled
from .failures import pull_failure, worth_retrying_pull
from ...config.settings import Settings
from ...errors import CvmfsError
from ...executor import Completed, Step, last_line, tail_lines
from ...pools import pool

CLAIM_WAIT_S = 30.0


class Automounter(CvmfsSource):
    source = "automounter"

    def __init__(self, settings: Settings, docker: DockerCli) -> None:
        super().__init__(settings, docker)
        self.started = False
        self.id: str | None = None  # the container this run started: stopped by id, not name
        self._stale_read = threading.Lock()  # held once its log has been read

    def __enter__(self) -> Automounter:
        self.started = self.ensure()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            self.release()

    # -- state -------------------------------------------------------------------------------
    def inspect(self) -> tuple[str | None, str | None]:
        """(container id, status) of the automounter's name, or (None, None)."""
        done = self.docker.run(commands.container_inspect(self.s.automounter_name), check=False)
        if not done.ok or not done.stdout.strip():
            return None, None
        found = json.loads(done.stdout)[0]
        return found.get("Id"), found["State"]["Status"]

    def status(self) -> str | None:
        return self.inspect()[1]

    def ensure(self) -> bool:
        """Make sure the automounter runs; True if this call started it. A stopped one is
        replaced by the id the inspect saw: never a newer one another run just started. Its
        image is inspected meanwhile (needed unless one runs already)."""
        name = self.s.automounter_name
        with pool(self.x.dry_run, "lwc-automounter", 1) as beside:
            image = beside.submit(self.x.run, self.image_inspect())
            seen, status = self.inspect()
            if status == "running":
                self.log.info("automounter_reused", name=name)
                return False
            if status == "created" and self._wait_running(name):
                return False
            if status is not None and seen:
                self.log.info("automounter_replaced", name=name, status=status, id=seen[:12])
                self.docker.run(commands.remove(seen), check=False)
            return self._start(self.image_command(image.result()))

    def image_inspect(self) -> Step:
        return self.docker.step(commands.image_inspect(str(self.s.automounter_image)),
                                check=False, placeholder='[{"Config": {"Cmd": '
                                                        '["<the image\'s own command>"]}}]')

    def image_command(self, inspected: Completed) -> tuple[str, ...]:
        """The automounter image's own entrypoint and command (pulled first if missing)."""
        image = str(self.s.automounter_image)
        if not inspected.ok:
            pulled = self.docker.run(
                commands.pull(image), retries=2, check=False, retry_if=worth_retrying_pull,
                what=f"{self.docker.program} pull {image} (LWC_AUTOMOUNTER_IMAGE)")
            if not pulled.ok:
                raise pull_failure("LWC_AUTOMOUNTER_IMAGE", image, pulled, logged_in=False)
            inspected = self.x.run(self.image_inspect())
        config = json.loads(inspected.stdout)[0].get("Config") or {}
        command = tuple(config.get("Entrypoint") or ()) + tuple(config.get("Cmd") or ())
        if not command and not self.x.dry_run:
            raise CvmfsError(f"{image} (LWC_AUTOMOUNTER_IMAGE) has no entrypoint or command")
        return command

    def _start(self, command: tuple[str, ...]) -> bool:
        """``docker run --detach`` under the name (one process: create and start), labelled
        with this run as its owner: a start that fails, or a signal while docker makes it, lets
        go of exactly the automounter this run made, never another run's."""
        name = self.s.automounter_name
        try:
            ran = self.docker.run(commands.automounter_run(self.s, command, owner.labels()),
                                  check=False, what="automounter start")
        except BaseException:  # a signal while docker made it: it may exist, and be ours
            with signals.deferred():
                self._let_go_if_ours()
            raise
        if not ran.ok:
            if "already in use" in ran.stderr:
                # Another run claimed the name a moment ago: use its automounter.
                self.log.info("automounter_claimed_elsewhere", name=name)
                if self._wait_running(name):
                    return False
            else:  # made, but it could not start
                with signals.deferred():
                    self._let_go_if_ours()
            self.raise_for_propagation(ran.stderr)
            raise CvmfsError(self.x.failure_message(self.docker.step((), what="automounter "
                                                                          "start"), ran))
        self.id = last_line(ran.stdout) or name
        self.log.info("automounter_started", name=name, id=self.id[:12],
                      image=str(self.s.automounter_image))
        return True

    def _let_go_if_ours(self) -> None:
        """The automounter of our name, if this run made it (its owner label says so): removed
        when it never ran (of use to nobody, and the name is free again at once); released
        when it runs (stopped unless another build uses it, or LWC_KEEP_AUTOMOUNTER)."""
        done = self.docker.run(commands.container_inspect(self.s.automounter_name), check=False)
        if not done.ok or not done.stdout.strip():
            return
        found = json.loads(done.stdout)[0]
        made_by = ((found.get("Config") or {}).get("Labels") or {}).get(commands.OWNER_LABEL)
        if made_by != str(owner.this_process()):
            return
        self.id = found.get("Id") or self.s.automounter_name
        if (found.get("State") or {}).get("Status") != "running":
            self.docker.run(commands.remove(self.id), check=False)
            return
        self.started = True
        self.release()

    def report_stale_mounts(self) -> None:
        """Log what the entrypoint wrapper of an automounter this run started unmounted (once:
        while the build runs, else at release)."""
        if not self._stale_read.acquire(blocking=False):
            return
        done = self.docker.run(commands.logs(self.id or self.s.automounter_name), check=False)
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
        try:  # created, then recorded: a signal in between still removes it by its name
            self.docker.run(commands.lease_create(self.s, name, owner.labels()), check=False)
            yield
        finally:
            with signals.deferred():
                self.docker.run(commands.remove(name), check=False)

    def wait_mounted(self, deadline: float, pending: Future) -> None:
        """While the base image is pulled (``pending``), look inside the automounter (``docker
        exec``) until it has every repository: listing one is what makes an on-demand
        (autofs) automounter mount it, so the mount overlaps the pull. Every 0.1 s at first,
        then less often (up to 1 s: each exec takes CPU from the pull, and the build waits for
        the pull anyway); no more once they are all there, or once the pull is done."""
        missing: list[str] = list(self.s.cvmfs_repos)
        delay = POLL_S
        while True:
            if settled(pending):
                return
            probe = self.docker.run(commands.probe_in_automounter(self.s), check=False)
            if probe.ok:
                missing = probe.stdout.split()
                if not missing:
                    return
            else:
                self._raise_if_stopped(probe.stderr)
                return  # an image without /bin/sh: the build container's own check waits instead
            self.pause(deadline, delay, missing, pending)
            delay = min(delay * 2, MAX_POLL_S)

    def _watch(self, container: str, ready: threading.Event) -> None:
        """The source's watch (cvmfs.py); then, mounted, what its start unmounted is in its
        log: read while the build runs, not after it."""
        super()._watch(container, ready)
        if self.started:
            self.report_stale_mounts()

    def check_alive(self) -> None:
        """Raise if the automounter is gone or no longer running; an engine that does not
        answer this once tells nothing (the build's own check still waits)."""
        done = self.docker.run(commands.container_inspect(self.s.automounter_name), check=False)
        if done.ok and done.stdout.strip():
            self._raise_if_stopped("", json.loads(done.stdout)[0]["State"]["Status"])
        elif self.docker.cli.missing_container in done.stderr.lower():
            self._raise_if_stopped("", None)

    def _raise_if_stopped(self, stderr: str, status: str | None = "") -> None:
        """Raise if the automounter is not running (``status`` as just seen; "": look)."""
        if status == "":
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
        others = owner.remove_orphans(self.docker)  # a killed run's build is no user
        if others:
            self.log.info("automounter_kept", name=name,
                          reason=f"{len(others)} other build(s) still use it")
            return
        target = self.id or name
        self.docker.run(commands.stop(target), check=False)
        removed = self.docker.run(commands.remove(target), check=False)
        if removed.ok:
            self.log.info("automounter_stopped", name=name)
        else:
            self.log.warning("automounter_not_removed", name=name,
                             error=self.x.masker(last_line(removed.stderr)))
        self.started = False
