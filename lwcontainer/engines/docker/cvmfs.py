"""Where /cvmfs comes from (automounter, host, or nowhere), and the wait until it is there.

Each source is a context manager with ``volume()`` (how containers mount it) and
``wait_mounted`` (cheap, on the source's side, while a pull is still ``pending``). The build
then checks every repository itself, as its container's first step
(``commands.CHECK_THEN_EXEC``); ``watched`` keeps an eye on the source meanwhile (progress
lines; a dead automounter stops the build at once), and ``missing_in_build`` turns the
check's failure into the CVMFS error. Where no build follows ('automount', 'run'),
``probe(image)`` is a container of its own that watches as the build would (a context manager
that removes it). The host's CVMFS and "none" are here; the automounter has a module of its
own. Waits take the pull as a future; the probe hands its stdout lines to a callback of its own
(``Probe._line``) that only sets an event.
"""
from __future__ import annotations

import math
import os
import secrets
import threading
import time
from concurrent.futures import Executor as Pool, Future, wait
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import ContextManager, Iterator

from structlog.contextvars import bound_contextvars

from . import commands
from ... import signals
from .client import DockerCli
from ...config.settings import SPEC_BY_NAME, Settings
from ...errors import ConfigError, CvmfsError
from ...executor import Completed
from ...output.logs import get_logger
from ...output.progress import progress

POLL_S = 0.1
MAX_POLL_S = 1.0  # while the base image is pulled (the build cannot start before it is there)
WATCH_S = 0.5  # how often a build waiting for CVMFS looks at the source

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


def on_shared_mount(path: Path, mountinfo: str | None = None) -> bool:
    """Is ``path`` on a mount with shared propagation (``shared:N`` in its optional fields)?
    Only then can a container follow mounts made there later (rslave)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return False
    target = str(path.resolve())
    best, shared = "", False
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        point = fields[4].encode().decode("unicode_escape")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best = point
            shared = any(f.startswith("shared:") for f in fields[6:fields.index("-")])
    return shared


def choose_source(s: Settings, engine_address: str | None) -> tuple[str, str]:
    """The effective LWC_CVMFS and why: ``auto`` takes the host's CVMFS when it has every
    repository and the engine is local (so it sees the same /cvmfs), else the automounter.
    ``engine_address`` is the engine actually used (a found dind service is remote)."""
    if s.cvmfs != "auto":
        return s.cvmfs, f"LWC_CVMFS={s.cvmfs}"
    if engine_address and not engine_address.startswith("unix://"):
        return "automounter", f"the engine is remote ({engine_address})"
    missing = [r for r in s.cvmfs_repos if not _non_empty(Path(s.cvmfs_host_dir) / r)]
    if missing and s.cvmfs_host_dir != SPEC_BY_NAME["LWC_CVMFS_HOST_DIR"].default:
        # a directory the user named is never bypassed for the automounter: said at once
        host = Path(s.cvmfs_host_dir)
        why = ("does not exist on this host" if not host.is_dir() else
               f"is a repository itself (give {host.parent})"
               if host.name in s.cvmfs_repos or (host / "cmsset_default.sh").exists() else
               f"does not hold {', '.join(missing)} (LWC_CVMFS_REPOS)")
        raise ConfigError("LWC_CVMFS_HOST_DIR", f"{host} {why}; expected {host}/<repository>/..."
                                                f", e.g. {host}/{s.cvmfs_repos[0]}/cmsset_default"
                                                ".sh. Unset LWC_CVMFS_HOST_DIR to use the "
                                                "automounter")
    if missing:
        return "automounter", f"not under {s.cvmfs_host_dir} on this host: {', '.join(missing)}"
    return "host", f"every repository is under {s.cvmfs_host_dir} and the engine is local"


def settled(future: Future, timeout: float = 0) -> bool:
    """True once ``future`` is done; its failure is raised here, in the caller's thread."""
    try:
        future.result(timeout)
    except TimeoutError:
        return False
    return True


class Probe:
    """One container of an image with the build's mount, watching from inside until every
    repository is there (mounts made later propagate into it); ready on its ready line, while
    the container itself exits. Started on enter; on exit a container still running is
    removed."""

    def __init__(self, source: CvmfsSource, image: str, deadline: float, pool: Pool) -> None:
        self.source = source
        self.image = image
        self.deadline = deadline
        self.pool = pool
        self.name = f"lwc-cvmfs-probe-{secrets.token_hex(4)}"
        self.ready = threading.Event()

    def __enter__(self) -> Probe:
        seconds = max(1, math.ceil(self.deadline - time.monotonic()))
        self.step = self.source.docker.step(
            commands.watch_as_build(self.source.volume(), self.image, self.name, seconds,
                                    self.source.s.cvmfs_repos),
            stream=True, on_line=self._line, check=False, what="CVMFS probe",
            placeholder=commands.READY_MARK)
        self.future: Future[Completed] = self.pool.submit(self.source.x.run, self.step)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.future.done():
            with signals.deferred():
                self.source.docker.remove(self.name, check=False)

    def _line(self, line: str) -> None:
        if line.strip() == commands.READY_MARK:
            self.ready.set()

    def wait(self) -> None:
        """Until ready; raises what kept the repositories away."""
        checked = time.monotonic()
        while not self.ready.wait(POLL_S) and not self.future.done():
            if time.monotonic() - checked > 1.0:
                self.source.check_alive()
                checked = time.monotonic()
        if not self.ready.is_set():
            self._raise_for(self.future.result())

    def _raise_for(self, done: Completed) -> None:
        self.source.raise_for_propagation(done.stderr)
        if not done.ok:
            raise CvmfsError(self.source.x.failure_message(self.step, done))
        missing = [m for m in done.stdout.split() if m != commands.READY_MARK]
        if missing or commands.READY_MARK not in done.stdout:
            raise self.source.timed_out(missing or list(self.source.s.cvmfs_repos))


class CvmfsSource:
    source = "none"

    def __init__(self, settings: Settings, docker: DockerCli) -> None:
        self.s = settings
        self.docker = docker
        self.x = docker.executor
        self.log = get_logger()

    def __enter__(self) -> CvmfsSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def volume(self) -> commands.Argv:
        return commands.cvmfs_volume(self.source, self.s)

    def lease(self, pool: Pool, until: Future) -> ContextManager[None]:
        """Marks this source as in use until the build container runs (ended on ``pool`` once
        ``until`` is done)."""
        return nullcontext()

    def wait_mounted(self, deadline: float, pending: Future) -> None:
        """Phase 1: wait, cheaply, until the source itself has every repository, or until
        ``pending`` (the pull) is done and the build container's check takes over; its
        failure is raised."""

    def probe(self, image: str, deadline: float, pool: Pool) -> Probe:
        """Every repository readable and non-empty as a container of ``image`` sees it, where
        no build container checks it itself. An empty directory left behind does not count."""
        return Probe(self, image, deadline, pool)

    @contextmanager
    def watched(self, container: str, pool: Pool, ready: threading.Event) -> Iterator[Future]:
        """While ``container`` (the build) waits in its first step, until it says ``ready``
        (commands.CVMFS_READY): the wait is not silent (progress lines, stage cvmfs), and if
        the source dies first the container is killed and the future fails with what
        happened. Looking costs no process in a container: the engine's word on the source."""
        watch = pool.submit(self._watch, container, ready)
        try:
            yield watch
        finally:
            ready.set()

    def _watch(self, container: str, ready: threading.Event) -> None:
        with bound_contextvars(stage="cvmfs"), progress("waiting for CVMFS",
                                                        self.s.progress_interval):
            while not ready.wait(WATCH_S):
                try:
                    self.check_alive()
                except CvmfsError:
                    self.docker.run(commands.kill(container), check=False)
                    raise

    def missing_in_build(self, done: Completed) -> None:
        """Raise the CVMFS error when the build container stopped at its own first step: a
        mount it could not make, or repositories still missing after LWC_CVMFS_TIMEOUT."""
        self.raise_for_propagation(done.stderr)
        if done.returncode != commands.CVMFS_MISSING_EXIT:
            return
        said = [line for line in done.stderr.splitlines() if line.startswith(
            commands.CVMFS_MISSING)]
        if said:
            self.check_alive()
            raise self.timed_out(said[-1][len(commands.CVMFS_MISSING):].split())

    def ready(self) -> None:
        self.log.info("cvmfs_ready", repos=list(self.s.cvmfs_repos), source=self.source)

    def check_alive(self) -> None:
        """Raise if the source has died while we wait for it."""

    def pause(self, deadline: float, delay: float, missing: list[str],
              pending: Future | None = None) -> None:
        """Sleep ``delay`` (less if the deadline comes first, or ``pending`` settles)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out(missing)
        if pending is None:
            time.sleep(min(delay, remaining))
        else:
            wait((pending,), timeout=min(delay, remaining))

    def raise_for_propagation(self, stderr: str) -> None:
        if "not a shared mount" in stderr or "not a shared or slave mount" in stderr:
            raise CvmfsError(SHARED_MOUNT_FIX.format(mounts=self.s.cvmfs_mounts))

    hint = ""

    def timed_out(self, missing: list[str]) -> CvmfsError:
        return CvmfsError(f"CVMFS repositories not mounted after {self.s.cvmfs_timeout:g}s "
                          f"(LWC_CVMFS_TIMEOUT): {', '.join(missing)}; {self.hint}")


class NoCvmfs(CvmfsSource):
    """LWC_CVMFS=none: for bases that need no CVMFS."""


class HostCvmfs(CvmfsSource):
    """The host's own /cvmfs (LWC_CVMFS_HOST_DIR), bind-mounted read-only; no automounter."""

    source = "host"

    @property
    def hint(self) -> str:
        return f"check {self.s.cvmfs_host_dir} (LWC_CVMFS_HOST_DIR) on this host"

    def __enter__(self) -> HostCvmfs:
        self.check_layout()
        return self

    def volume(self) -> commands.Argv:
        return commands.cvmfs_volume(self.source, self.s,
                                     propagate=on_shared_mount(Path(self.s.cvmfs_host_dir)))

    def check_layout(self) -> None:
        """Said at once, not after LWC_CVMFS_TIMEOUT: a host directory that does not exist, or
        one that is itself a repository rather than the directory holding them."""
        host = Path(self.s.cvmfs_host_dir)
        layout = (f"expected {host}/<repository>/..., e.g. {host}/{self.s.cvmfs_repos[0]}/"
                  "cmsset_default.sh")
        if not host.is_dir():
            raise ConfigError("LWC_CVMFS_HOST_DIR", f"{host} does not exist on this host; "
                                                    f"{layout}")
        if host.name in self.s.cvmfs_repos or (host / "cmsset_default.sh").exists():
            raise ConfigError("LWC_CVMFS_HOST_DIR", f"{host} is a repository itself; give the "
                                                    f"directory that holds it ({host.parent}); "
                                                    f"{layout}")
        if not any(_non_empty(host / repo) for repo in self.s.cvmfs_repos):
            raise ConfigError("LWC_CVMFS_HOST_DIR", f"{host} holds none of "
                                                    f"{', '.join(self.s.cvmfs_repos)} "
                                                    f"(LWC_CVMFS_REPOS); {layout}")

    def missing(self) -> list[str]:
        host = Path(self.s.cvmfs_host_dir)
        return [r for r in self.s.cvmfs_repos if not _non_empty(host / r)]

    def wait_mounted(self, deadline: float, pending: Future) -> None:
        delay = POLL_S
        while True:
            if settled(pending):
                return
            missing = self.missing()
            if not missing:
                return
            self.pause(deadline, delay, missing, pending)
            delay = min(delay * 2, MAX_POLL_S)
