"""The stages of a light-weight image build, each a method; ``run_all`` runs them in order.

wait-daemon, login, pull, automounter, cvmfs, build, commit, tag, push, report, cleanup.
"""
from __future__ import annotations

import json
import re
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from structlog.contextvars import bound_contextvars

from . import commands, report, signals
from .background import Background
from .ci import Sections, engine
from .automounter import Automounter
from .buildcontainer import BuildContainer
from .cvmfs import CvmfsSource, HostCvmfs, NoCvmfs, choose_source
from .dockerconfig import private_config
from .errors import BuildError, CommitError, ConfigError, EngineError, LoginError, PushError
from .executor import Executor, Step, is_auth_error, last_line
from .logs import get_logger
from .progress import progress
from .settings import Settings

LOCAL_SOCKET = Path("/var/run/docker.sock")
_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class Pipeline:
    def __init__(self, settings: Settings, executor: Executor) -> None:
        self.s = settings
        self.x = executor
        self.log = get_logger()
        self.base: dict = {}
        self.image_id = ""
        self.layer_size: int | None = None
        self.digest = ""
        self.sections = Sections(settings.ci_style, executor.out)
        self.engine_address = dict(settings.engine_vars).get("DOCKER_HOST")  # until wait_daemon

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Logs the stage's start and end; in CI, wraps it in a collapsible log section."""
        started, wall = time.monotonic(), time.time()
        main = threading.current_thread() is threading.main_thread()
        if main:
            self.sections.flush()
            self.sections.open(name, f"lwcontainer: {name}")
        outcome = "failed"
        with bound_contextvars(stage=name):
            self.log.info("stage_start")
            try:
                yield
            except BaseException as exc:
                self.log.error("stage_done", outcome=outcome, error=self.x.masker(str(exc)),
                               duration_s=round(time.monotonic() - started, 3))
                raise
            else:
                outcome = "ok"
                self.log.info("stage_done", outcome=outcome,
                              duration_s=round(time.monotonic() - started, 3))
            finally:
                if main:
                    self.sections.close(name)
                else:
                    self.sections.later(name, wall, time.time(), f"{name}: {outcome} in "
                                        f"{time.monotonic() - started:.2f} s")

    def skip(self, name: str, reason: str) -> None:
        if threading.current_thread() is threading.main_thread():
            self.sections.flush()
            self.sections.open(name, f"lwcontainer: {name} (skipped)")
            self.log.info("stage_done", stage=name, outcome="skipped", reason=reason)
            self.sections.close(name)
        else:
            self.log.info("stage_done", stage=name, outcome="skipped", reason=reason)
            self.sections.later(name, time.time(), time.time(), f"{name}: skipped ({reason})")

    # -- the whole job ------------------------------------------------------------------------
    def run_all(self) -> None:
        with private_config(self.s, self.x):
            self._run_all()

    def _run_all(self) -> None:
        self.wait_daemon()
        # Log in and look at (or pull) the base image while the automounter starts and mounts.
        fetch = Background(self.login, self.pull, inline=self.x.dry_run)
        cleanup = ExitStack()  # build container, lease, automounter: released on every path
        try:
            cvmfs = self.open_cvmfs(cleanup)
            lease = cleanup.enter_context(ExitStack())
            lease.enter_context(cvmfs.lease())  # a shared automounter is in use from now on
            build: list[str] = []

            def create_build_container() -> None:  # while the CVMFS probe watches
                build.append(cleanup.enter_context(BuildContainer(self.s, self.x, cvmfs.volume())))
                lease.close()

            self.wait_cvmfs(cvmfs, pending=fetch, poll=fetch.raise_if_failed,
                            meanwhile=create_build_container)
            self.build(build[0])
            self.commit(build[0])
        except BaseException:
            cleanup.close()
            self.x.abort()  # a pull still running in the background
            raise
        finally:
            fetch.join(reraise=False)
        # Clean up and measure the layer while tagging and pushing.
        closing = Background(cleanup.close, self.measure_layer, inline=self.x.dry_run)
        try:
            self.tag()
            self.push()
        except PushError:
            self.finish(closing)  # the report names the image that stays tagged locally
            raise
        except BaseException:
            with signals.deferred():
                closing.join(reraise=False)
            raise
        self.finish(closing)

    def finish(self, closing: Background) -> None:
        with signals.deferred():
            closing.join(reraise=False)
        self.write_report()

    # -- stages ------------------------------------------------------------------------------
    def open_cvmfs(self, cleanup: ExitStack) -> CvmfsSource:
        """Choose where /cvmfs comes from and enter it (starting an automounter if needed);
        ``cleanup`` releases it."""
        source, reason = choose_source(self.s, self.engine_address)
        self.log.info("cvmfs_source", source=source, reason=reason)
        kinds = {"automounter": Automounter, "host": HostCvmfs, "none": NoCvmfs}
        cvmfs = kinds[source](self.s, self.x)
        if source != "automounter":
            return cleanup.enter_context(cvmfs)
        with self.stage("automounter"):
            return cleanup.enter_context(cvmfs)

    def wait_cvmfs(self, cvmfs: CvmfsSource, image: str | None = None,
                   pending: Background | None = None, poll: Callable[[], None] = lambda: None,
                   meanwhile: Callable[[], None] = lambda: None) -> None:
        """Wait until every repository is there as the build will see it. While ``pending``
        (login, pull) still runs, wait on the source's side (cheap); then one probe container of
        the base image watches from inside, and ``meanwhile`` runs as it does. ``poll`` runs
        between checks, so a failed background login ends the wait at once."""
        if cvmfs.source == "none":
            if pending is not None:
                pending.join()
            self.skip("cvmfs", "LWC_CVMFS=none")
            meanwhile()
            return
        with self.stage("cvmfs"), progress("waiting for CVMFS", self.s.progress_interval):
            deadline = time.monotonic() + self.s.cvmfs_timeout
            if pending is not None:
                if not pending.wait(0):
                    cvmfs.wait_mounted(deadline, poll, until=pending)
                waited = time.monotonic()
                pending.join()
                deadline += time.monotonic() - waited  # time spent pulling is not CVMFS's
            cvmfs.confirm(image or str(self.s.from_image), deadline, poll, meanwhile)

    def wait_daemon(self) -> None:
        with self.stage("wait-daemon"), progress("waiting for the Docker engine",
                                                 self.s.progress_interval):
            found = engine(dict(self.s.engine_vars), local_socket=LOCAL_SOCKET.exists())
            self.x.env.update(found.env)
            self.engine_address = found.address
            where = found.address or "the default socket (DOCKER_HOST unset)"
            self.log.info("engine_address", address=where, reason=found.reason)
            deadline = time.monotonic() + self.s.docker_timeout
            if found.cert_path and not self.x.dry_run:
                self.wait_for_certificates(Path(found.cert_path), deadline)
            delay = 0.1
            while True:
                done = self.x.run(Step(commands.server_version(), check=False,
                                       placeholder="(engine version)"))
                if done.ok:
                    self.log.info("engine_ready", version=done.stdout.strip())
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineError(
                        f"no Docker engine answered at {where} within {self.s.docker_timeout:g}s "
                        f"(LWC_DOCKER_TIMEOUT): {self.x.masker(last_line(done.stderr))}")
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)

    def wait_for_certificates(self, directory: Path, deadline: float) -> None:
        """The dind service writes its client certificates after the job has started."""
        names = ("ca.pem", "cert.pem", "key.pem")
        while True:
            missing = [n for n in names if not (directory / n).is_file()]
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise EngineError(f"dind TLS certificates {', '.join(missing)} did not appear in "
                                  f"{directory} within {self.s.docker_timeout:g}s "
                                  "(DOCKER_TLS_CERTDIR, LWC_DOCKER_TIMEOUT)")
            time.sleep(0.2)

    def login(self) -> None:
        if not self.s.registry:
            self.skip("login", "no registry configured (CI_REGISTRY unset)")
            return
        with self.stage("login"):
            self.x.run(Step(commands.login(self.s.registry, self.s.registry_user or ""),
                            stdin=self.s.registry_password, error=LoginError, retries=2,
                            what=f"docker login {self.s.registry}"))

    def inspect_base(self) -> dict | None:
        done = self.x.run(Step(commands.image_inspect(str(self.s.from_image)), check=False))
        if not done.ok or not done.stdout.strip():
            return None
        return json.loads(done.stdout)[0]

    def check_base(self) -> bool:
        """Inspect FROM once (its config serves the commit); True when it must be pulled."""
        if self.s.pull == "always":
            return True
        base = self.inspect_base()
        if base is not None:
            self.base = base
            return False
        if self.s.pull == "never" and not self.x.dry_run:
            raise ConfigError("LWC_PULL", f"never, but {self.s.from_image} (FROM) is not in the "
                                          "engine")
        return True

    def pull(self, needed: bool | None = None) -> None:
        ref = str(self.s.from_image)
        if needed is None:
            needed = self.check_base()
        if not needed:
            self.skip("pull", f"{ref} is present and LWC_PULL={self.s.pull}")
            return
        with self.stage("pull"), progress(f"pulling {ref}", self.s.progress_interval):
            step = Step(commands.pull(ref), retries=3, what=f"docker pull {ref}", check=False)
            done = self.x.run(step)
            if not done.ok:
                message = self.x.failure_message(step, done)
                if is_auth_error(done.stderr):
                    raise LoginError(message)
                if "not found" in done.stderr or "manifest unknown" in done.stderr:
                    raise ConfigError("FROM", message)
                raise EngineError(message)
            self.base = self.inspect_base() or {}

    def build(self, container: str) -> None:
        with self.stage("build"):
            step = Step(commands.build_start(container), stream=True, check=False,
                        what="build")
            done = self.x.run(step)
            if not done.ok:
                # 125-127 are docker's own (could not create/start, command not found).
                if done.returncode >= 125:
                    raise BuildError(self.x.failure_message(step, done),
                                     returncode=done.returncode)
                raise BuildError(f"build script {self.s.build_script} exited with code "
                                 f"{done.returncode}", returncode=done.returncode)

    def labels(self) -> dict[str, str]:
        labels = {
            "org.opencontainers.image.created":
                (self.s.created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "org.opencontainers.image.base.name": str(self.s.from_image),
        }
        if self.s.project_url:
            labels["org.opencontainers.image.source"] = self.s.project_url
        if self.s.commit_sha:
            labels["org.opencontainers.image.revision"] = self.s.commit_sha
        digest = self.base_digest()
        if digest:
            labels["org.opencontainers.image.base.digest"] = digest
        return labels

    def base_digest(self) -> str | None:
        if self.s.from_image.digest:
            return self.s.from_image.digest
        repository = self.s.from_image.repository
        for repo_digest in self.base.get("RepoDigests") or ():
            name, _, digest = repo_digest.partition("@")
            if name == repository or name.endswith("/" + repository):
                return digest
        return None

    def commit(self, container: str) -> None:
        with self.stage("commit"):
            changes = commands.commit_changes(self.base.get("Config"), self.labels())
            done = self.x.run(Step(commands.commit(container, changes), error=CommitError,
                                   what="docker commit", placeholder="sha256:<image-id>"))
            self.image_id = done.stdout.strip()
            self.log.info("image_committed", image_id=self.image_id)

    def measure_layer(self) -> None:
        """Bytes the commit added to the base image (for the report)."""
        image = self.x.run(Step(commands.image_inspect(self.image_id), check=False))
        if image.ok and image.stdout.strip() and self.base.get("Size") is not None:
            self.layer_size = json.loads(image.stdout)[0]["Size"] - self.base["Size"]

    def tag(self) -> None:
        with self.stage("tag"):
            for target in self.s.targets:
                self.x.run(Step(commands.tag(self.image_id, str(target)), error=CommitError,
                                what=f"docker tag {target}"))

    def push(self) -> None:
        if not self.s.push_enabled:
            self.skip("push", "no registry configured (CI_REGISTRY unset); the image is local: "
                              + ", ".join(map(str, self.s.targets)))
            return
        with self.stage("push"), progress("pushing", self.s.progress_interval):
            for target in self.s.targets:
                step = Step(commands.push(str(target)), retries=self.s.push_retries,
                            what=f"docker push {target}", check=False,
                            placeholder="digest: sha256:" + "0" * 64)
                done = self.x.run(step)
                if not done.ok:
                    raise PushError(
                        f"{self.x.failure_message(step, done)}. The image is kept, tagged "
                        f"locally as {', '.join(map(str, self.s.targets))}; push again with "
                        f"'lwcontainer push' (same settings) once the registry is back",
                        returncode=done.returncode)
                found = _DIGEST_RE.search(done.stdout)
                if found and not self.digest:
                    self.digest = f"{self.s.to_image.repository}@{found.group(1)}"
                self.log.info("pushed", tag=str(target), digest=found and found.group(1))

    def local_image_id(self) -> str:
        """The id of TO in the engine (for 'lwcontainer push' of an earlier build)."""
        ref = str(self.s.to_image)
        done = self.x.run(Step(commands.image_inspect(ref), check=False,
                               placeholder='[{"Id": "sha256:<image-id>"}]'))
        if not done.ok:
            raise ConfigError("TO", f"{ref} is not in the engine: build it first")
        return json.loads(done.stdout)[0]["Id"]

    def write_report(self) -> None:
        self.sections.flush()
        with self.stage("report"):
            result = report.Report(image=str(self.s.to_image), image_id=self.image_id,
                                   digest=self.digest,
                                   tags=tuple(map(str, self.s.targets)),
                                   layer_size=self.layer_size)
            if self.x.dry_run:
                self.log.info("report_planned", path=str(self.s.report))
                return
            result.write(self.s.report)
            self.log.info("report_written", path=str(self.s.report), image=result.image,
                          digest=result.digest)
