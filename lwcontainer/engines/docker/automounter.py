"""The CVMFS automounter as a context manager: one (``LWC_AUTOMOUNTER_NAME``) serves every run on
an engine. A run reuses a running one; otherwise it starts one under the name (``docker run
--detach``, labelled with the run as its owner) with its entrypoint wrapped, so that whatever a
dead automounter left mounted below the shared directory is unmounted first. Until the run's
build container runs, a lease (a container never started, labelled like a build) says the
automounter is in use; it is made beside the first inspects, as the pull starts (a container's
create flushes the engine's file system, and with it whatever the pull has written so far).
'lwcontainer automount' alone takes none: no build follows. On exit it stops only an
automounter it started itself, and not while another run's build (or lease) container still
exists.
"""
from __future__ import annotations

import json
import math
import secrets
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor as Pool, Future, wait
from contextlib import contextmanager
from typing import Iterator

from structlog.contextvars import bound_contextvars

from . import commands, owner
from ... import signals
from .client import DockerCli
from .cvmfs import POLL_S, CvmfsSource, settled
from .failures import pull_failure, worth_retrying_pull
from ...config.settings import Settings
from ...errors import CvmfsError
from ...executor import Completed, Step, last_line, tail_lines
from ...pools import detached, pool, wait_any

CLAIM_WAIT_S = 30.0
LOOK_S = 5  # seconds one look inside the automounter lasts at most


class Automounter(CvmfsSource):
    source = "automounter"

    def __init__(self, settings: Settings, docker: DockerCli,
                 pull: commands.Argv | None = None) -> None:
        super().__init__(settings, docker)
        #: how its image is pulled when missing: the engine's pull of it (DockerEngine.pull_argv:
        #: podman's TLS rule, auth file and fully qualified name), docker's by default
        self.pull_argv = pull or commands.pull(str(settings.automounter_image))
        self.started = False
        self.id: str | None = None  # the container this run started: stopped by id, not name
        self.leased: str | None = None  # the lease container's name, while it may exist
        self._stale_read = threading.Lock()  # held once its log has been read
        self._lease_lock = threading.Lock()

    def __enter__(self) -> Automounter:
        try:
            self.started = self.ensure(lease=True)
        except BaseException:
            with signals.deferred():
                self.end_lease()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            self.release()

    # -- state -------------------------------------------------------------------------------
    def inspect(self) -> tuple[str | None, str | None]:
        """(container id, status) of the automounter's name, or (None, None)."""
        found = self._inspected()
        return (found.get("Id"), found["State"]["Status"]) if found else (None, None)

    def _inspected(self) -> dict:
        """``docker container inspect`` of the automounter's name; {} if there is none."""
        done = self.docker.run(commands.container_inspect(self.s.automounter_name), check=False)
        return json.loads(done.stdout)[0] if done.ok and done.stdout.strip() else {}

    def status(self) -> str | None:
        return self.inspect()[1]

    def ensure(self, lease: bool = False) -> bool:
        """Make sure the automounter runs; True if this call started it. A stopped one is
        replaced by the id the inspect saw: never a newer one another run just started. Its
        image is inspected meanwhile (needed unless one runs already); with ``lease`` (a build
        follows), the lease is taken beside them once the image is known to be there."""
        name = self.s.automounter_name
        with pool(self.x.dry_run, "lwc-automounter", 2) as beside:
            image = beside.submit(self.x.run, self.image_inspect())
            if lease:
                beside.submit(self._lease_if_there, image)  # waited for on the way out
            found = self._inspected()
            seen, status = found.get("Id"), (found.get("State") or {}).get("Status")
            lease_now = lease and not image.result().ok  # no lease could be made beside
            if status == "running":
                self.log.info("automounter_reused", name=name)
                if lease_now:  # its image, by id: the tag is gone, or was never here
                    self.take_lease(found.get("Image"))
                return False
            if status == "created" and self._wait_running(name):
                if lease_now:
                    self.take_lease(found.get("Image"))
                return False
            if status is not None and seen:
                self.log.info("automounter_replaced", name=name, status=status, id=seen[:12])
                self.docker.remove(seen, check=False)
            command = self.image_command(image.result())
            if lease_now:  # pulled just now
                self.take_lease()
            return self._start(command)

    def image_inspect(self) -> Step:
        return self.docker.step(commands.image_inspect(str(self.s.automounter_image)),
                                check=False, placeholder='[{"Config": {"Cmd": '
                                                        '["<the image\'s own command>"]}}]')

    def image_command(self, inspected: Completed) -> tuple[str, ...]:
        """The automounter image's own entrypoint and command (pulled first if missing)."""
        image = str(self.s.automounter_image)
        if not inspected.ok:
            pulled = self.docker.run(
                self.pull_argv, retries=2, check=False, retry_if=worth_retrying_pull,
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
            self.docker.remove(self.id, check=False)
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

    def _lease_if_there(self, image: Future[Completed]) -> None:
        """Take the lease if the automounter's image is in the engine (a create would pull
        it: ensure() takes it after its own pull)."""
        if image.result().ok:
            self.take_lease()

    def take_lease(self, image: str | None = None) -> None:
        """A created, never started container labelled like a build (of the automounter's
        image, or ``image``): until the build container runs, it tells other runs that this
        automounter is in use."""
        with self._lease_lock:  # named first, then created: a signal in between still removes
            self.leased = f"{self.s.automounter_name}-lease-{secrets.token_hex(4)}"  # it
            self.docker.run(commands.lease_create(self.s, self.leased, owner.labels(), image),
                            check=False)

    def end_lease(self) -> None:
        """Remove the lease (once: one caller at a time, and a failed removal is tried again
        by the next, the automounter's release at the latest)."""
        with self._lease_lock:
            if self.leased is None:
                return
            done = self.docker.remove(self.leased, check=False)
            if done.ok or self.docker.cli.missing_container in done.stderr.lower():
                self.leased = None

    @contextmanager
    def lease(self, pool: Pool, until: Future) -> Iterator[None]:
        """The lease taken on enter holds while the build container is made; it is then
        removed on ``pool`` once ``until`` is done (the build container runs: its removal is
        not on the way of that start). The release waits for that removal, or makes it:
        it counts the builds that still use the automounter."""
        try:
            yield
        except BaseException:
            with signals.deferred():
                self.end_lease()
            raise
        if self.x.dry_run:  # nothing runs to wait for: the plan says it here
            self.end_lease()
        else:
            pool.submit(self._end_lease_after, until)

    def _end_lease_after(self, until: Future) -> None:
        wait_any(until)
        self.end_lease()

    def wait_mounted(self, deadline: float, pending: Future) -> None:
        """While the base image is pulled (``pending``), look inside the automounter until it
        has every repository: listing one is what makes an on-demand (autofs) automounter
        mount it, so the mount overlaps the pull. One ``docker exec`` looks every 0.1 s, up to
        LOOK_S at a time (an exec per look takes CPU from the pull, which decompresses on the
        same cores). Returns once they are all there, or once the pull is done: a look still
        running then ends by itself (on a daemon thread: not even the process's exit waits for
        it), and the build container checks for itself."""
        missing: list[str] = list(self.s.cvmfs_repos)
        while True:
            seconds = max(1, min(LOOK_S, math.ceil(deadline - time.monotonic())))
            look = detached("lwc-look", self.x.run, self.docker.step(
                commands.look_in_automounter(self.s, seconds), check=False,
                timeout=seconds + self.s.docker_timeout, timeout_setting="LWC_DOCKER_TIMEOUT",
                placeholder=commands.READY_MARK))
            while not wait((look, pending), timeout=POLL_S * 2, return_when=FIRST_COMPLETED).done:
                pass  # (short waits: signals are handled in between)
            if settled(pending):
                return
            done = look.result()
            if not done.ok:
                self._raise_if_stopped(done.stderr)
                return  # an image without /bin/sh: the build container's own check waits instead
            missing = [r for r in done.stdout.split() if r != commands.READY_MARK]
            if not missing:
                return
            self.pause(deadline, POLL_S, missing, pending)

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
        """The lease ended (it would count as a build still using the automounter); then the
        automounter this run started stopped, unless kept or used by another build."""
        self.end_lease()
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
        removed = self.docker.remove(target, check=False)
        if removed.ok:
            self.log.info("automounter_stopped", name=name)
        else:
            self.log.warning("automounter_not_removed", name=name,
                             error=self.x.masker(last_line(removed.stderr)))
        self.started = False
