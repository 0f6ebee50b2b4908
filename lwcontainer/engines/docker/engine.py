"""The docker engine: the recipe's docker commands, stage by stage, on a Docker engine.

Stages: wait-daemon, login, pull, automounter, cvmfs, build, commit, tag, push. Inside
``workspace()`` this engine overlaps its own preparation: login and pull run in a background
thread (a future) while the automounter starts and CVMFS mounts; the build container is created
on the main thread once the pull is done, and its own first step waits for every repository
before it runs the build script.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import replace
from concurrent.futures import Future, wait
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Mapping

from . import commands, envcheck, modes, owner
from .automounter import Automounter
from .buildcontainer import BuildContainer
from .address import DEFAULT_ADDRESS, EngineAddress, locate
from .client import DockerCli
from .cvmfs import CvmfsSource, HostCvmfs, NoCvmfs, choose_source, settled
from .dockerconfig import private_config, private_path
from .failures import login_failure, pull_failure, worth_retrying_pull
from ..cli import EngineCli
from ...config.reference import InvalidReference, parse
from ...config.settings import Settings
from ...errors import BuildError, CommitError, ConfigError, EngineError, PushError
from ...executor import TIMED_OUT, Executor, child_environment, last_line
from ...output import report
from ...output.logs import get_logger
from ...output.progress import progress
from ...pools import pool, settle
from ...stages import Image, Stages, labels

#: the line a docker push prints once the registry has the manifest (the engine's own format)
PUSHED = re.compile(r"(?P<tag>[\w][\w.-]{0,127}): digest: (?P<digest>sha256:[0-9a-f]{64}) "
                    r"size: \d+")
SOURCES = {"host": HostCvmfs, "none": NoCvmfs}  # and the automounter: DockerEngine.automounter


class DockerEngine:
    """The stages on a Docker engine. Another CLI that speaks docker's language (podman) is a
    subclass: it builds its own ``EngineCli`` (``locate``, ``make_cli``) and overrides the few
    argv builders and stages where its CLI differs."""

    #: the single-stage subcommands this engine has (engines/docker/subcommands.py)
    SUBCOMMANDS = frozenset({"login", "automount", "build", "commit", "run"})

    def __init__(self, settings: Settings, executor: Executor, stages: Stages,
                 environ: Mapping[str, str], local_socket: Path | None = None) -> None:
        self.s = settings
        self.x = executor
        self.stages = stages
        self.log = get_logger()
        # Everything a step's environment depends on is decided here, before the first step.
        self.address: EngineAddress = self.locate(environ, local_socket or settings.local_socket)
        self.cli: EngineCli = self.make_cli(environ)
        timeouts = {"engine": settings.docker_timeout, "transfer": settings.transfer_timeout,
                    "build": settings.build_timeout,
                    # the probe stops itself after LWC_CVMFS_TIMEOUT; this is the backstop
                    "probe": settings.cvmfs_timeout + settings.transfer_timeout}
        hide = settings.secret_variables
        self.docker = DockerCli(executor, self.cli,
                                child_environment(environ, self.cli.variables(), hide), timeouts)
        # 'lwcontainer login' logs in to the user's own config, where the login stays.
        self.user_docker = DockerCli(executor, self.cli,
                                     child_environment(environ, self.cli.variables(False), hide),
                                     timeouts)
        self.private_login = True
        self.base: dict = {}
        self.env_read: Future | None = None  # names whose values carry credentials (commit)
        self.container: str | None = None
        self.image_id = ""
        self.logged_in = False
        self.cvmfs_source = ""
        self.cvmfs: CvmfsSource | None = None  # where the build container's /cvmfs comes from
        self.cvmfs_wait: int | None = None  # how long its first step waits for it
        self.layer_check: modes.LayerCheck | None = None  # the layer's world-writable entries
        # the build container runs (its first line, or its end): what can wait until then
        # (the layer check's start, the lease's removal) keeps off the way of its start
        self.running: Future[None] = Future()
        self.build_box: BuildContainer | None = None  # the build container, as entered
        # login+pull and the orphan scan; while the build runs, the CVMFS watch, the layer
        # check (which waits there all along), the lease's end and the read of the build
        # container's environment (the commit's credentials check); one to spare
        self.pool = pool(executor.dry_run, "lwc-docker", workers=6)

    # -- the seam: what this CLI is and where its engine is --------------------------------
    def locate(self, environ: Mapping[str, str], local_socket: Path) -> EngineAddress:
        """Where the Docker engine is: DOCKER_HOST as given, or a CI job's dind service."""
        return locate(self.s, environ, local_socket)

    def make_cli(self, environ: Mapping[str, str]) -> EngineCli:
        config_dir = private_path(self.s)
        return EngineCli(program="docker", title="Docker engine", address=self.address.env,
                         reason=self.address.reason,
                         auth=str(config_dir) if config_dir else None,
                         auth_variable="DOCKER_CONFIG")

    def private_context(self):
        """The run's private login, created for the run and removed at its end."""
        directory = Path(self.cli.auth) if self.cli.auth else None
        return private_config(self.s, directory, self.x.dry_run)

    def use_user_login(self) -> None:
        """'lwcontainer login': log in to the user's own configuration, where it stays."""
        self.docker = self.user_docker
        self.private_login = False

    # -- argv where CLIs speaking docker's language differ (engines/podman overrides) -------
    def login_argv(self) -> commands.Argv:
        return commands.login(self.s.registry, self.s.registry_user or "")

    def pull_argv(self, ref: str) -> commands.Argv:
        return commands.pull(ref)

    def push_argv(self, ref: str) -> commands.Argv:
        return commands.push(ref)

    def commit_argv(self, changes: tuple[str, ...]) -> commands.Argv:
        return commands.commit(self.container, changes, str(self.s.targets[0]))

    def check_cvmfs_source(self, source: str, reason: str) -> None:
        """Refuse, at once, a CVMFS source this engine cannot provide (docker: all work)."""

    def create_options(self) -> commands.Argv:
        """More options for the build container's create (none for docker)."""
        return ()

    # -- the interface ----------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[None]:
        try:
            with self.private_context():
                self.wait_daemon()
                yield
        finally:
            self.pool.shutdown(wait=False)

    @contextmanager
    def workspace(self, keep_container: bool = False) -> Iterator[None]:
        """Log in and pull in the background while CVMFS comes up; the build container is
        created meanwhile. Everything is released on exit, on every path."""
        fetch = self.pool.submit(self.login_then_pull)
        self.running = Future()
        with ExitStack() as cleanup:
            cleanup.callback(settle, self.running)  # (last) what still waits for it goes on
            try:
                self.container = self.prepare(cleanup, fetch, keep_container)
                if not keep_container and not self.x.dry_run:  # made while the build runs
                    self.layer_check = cleanup.enter_context(modes.LayerCheck(
                        self.docker, self.container, str(self.s.from_image), self.pool,
                        after=self.running))
            except BaseException:
                cleanup.close()   # build container, lease, automounter
                self.x.abort()    # a pull still running in the background
                raise
            yield

    def build(self) -> None:
        with self.stages.stage("build"):
            ready = threading.Event()  # the build container's first step found CVMFS

            def observe(line: str) -> None:
                settle(self.running)
                if line.startswith(commands.CVMFS_READY):
                    ready.set()
            step = self.docker.step(commands.build_start(self.container), stream=True,
                                    check=False, what="build", observe=observe)
            if not self.x.dry_run:  # what the commit would keep, read while the build runs
                self.env_read = self.pool.submit(self.credentials_in_env)
            watching = self.cvmfs is not None and self.cvmfs_wait and not self.x.dry_run
            try:
                with (self.cvmfs.watched(self.container, self.pool, ready) if watching
                      else nullcontext()) as watch:
                    done = self.x.run(step)
            finally:
                settle(self.running)  # (one that said nothing has run too, or is ending)
            if done.ok:
                if self.layer_check is not None:
                    self.layer_check.release()  # reads the layer beside commit and push
                return
            if watch is not None:  # the automounter died while the build waited for it
                wait((watch,), timeout=5)
                if watch.done() and watch.exception() is not None:
                    raise watch.exception()
            if self.cvmfs is not None:
                self.cvmfs.missing_in_build(done)
            if done.returncode >= 125 or done.returncode == TIMED_OUT and self.s.build_timeout:
                # docker's own (could not start, command not found), or out of time
                raise BuildError(self.x.failure_message(step, done))
            raise BuildError(f"build script {self.s.build_script} exited with code "
                             f"{done.returncode}")

    def commit(self) -> Image:
        with self.stages.stage("commit"):
            self.refuse_credentials()
            known = self.base.get("Config") or ({} if not self.x.dry_run else None)
            changes = commands.commit_changes(known, labels(self.s, self.base_digest()))
            done = self.docker.run(self.commit_argv(changes), error=CommitError,
                                   what=f"{self.cli.program} commit",
                                   placeholder="sha256:<image-id>")
            self.image_id = self.cli.image_id(done.stdout)
            self.log.info("image_committed", image_id=self.image_id)
        self.tag()
        return Image(self.image_id, details=self.details())

    def refuse_credentials(self) -> None:
        """Refuse the commit when the build container's environment (which a commit keeps in
        the image) carries credentials the run added (engines/docker/envcheck.py): read
        while the build ran, or now for a container an earlier 'lwcontainer build' kept."""
        if self.x.dry_run:
            return
        found = (self.env_read or self.pool.submit(self.credentials_in_env)).result()
        if found:
            raise envcheck.refusal(found, self.s.build_env, self.cli.program)

    def credentials_in_env(self) -> list[str]:
        done = self.docker.run(commands.container_inspect(self.container), check=False)
        if not done.ok or not done.stdout.strip():
            return []   # the commit itself says what is wrong with the container
        env = (json.loads(done.stdout)[0].get("Config") or {}).get("Env") or ()
        base_env = (self.base.get("Config") or {}).get("Env") or ()
        return envcheck.carrying_credentials(env, base_env, self.x.masker)

    def details(self) -> tuple[tuple[str, str], ...]:
        """How CVMFS was mounted, so that 'lwcontainer run' mounts it the same way."""
        if not self.cvmfs_source:
            return ()
        host = (("LWC_CVMFS_HOST_DIR", self.s.cvmfs_host_dir),) \
            if self.cvmfs_source == "host" else ()
        return (("LWC_CVMFS_SOURCE", self.cvmfs_source), *host)

    def measure(self, image: Image) -> Image:
        """Bytes the commit added to the base image (for the report), and a warning naming the
        layer's world-writable entries (said, never changed: the layer is what the build made).
        Both only read, so they run beside the push, off the build's critical path; then the
        build container has served, and is removed there too."""
        done = self.docker.run(commands.image_inspect(image.id), check=False)
        if not self.x.dry_run:
            modes.warn_world_writable(self.docker, self.container, image.id, self.layer_check)
        if self.build_box is not None and not self.build_box.keep:
            self.build_box.remove()
        if done.ok and done.stdout.strip() and self.base.get("Size") is not None:
            return replace(image, layer_size=json.loads(done.stdout)[0]["Size"]
                           - self.base["Size"])
        return image

    def publish(self, image: Image) -> str:
        if not self.s.push_enabled:
            self.stages.skip("push", f"{self.s.no_push_reason}; the image is local: "
                                     + ", ".join(map(str, self.s.targets)))
            return ""
        if not self.logged_in:
            self.login()
        return self.push()

    def built(self) -> Image:
        """TO as the engine has it (for 'lwcontainer push' of an earlier build)."""
        ref = str(self.s.to_image)
        done = self.docker.run(commands.image_inspect(ref), check=False,
                               placeholder='[{"Id": "sha256:<image-id>"}]')
        if not done.ok:
            raise ConfigError("TO", f"{ref} is not in the engine: build it first")
        self.image_id = self.cli.image_id(json.loads(done.stdout)[0]["Id"])
        previous = report.read(self.s.report, self.s.report_prefix)
        if previous.get("LWC_IMAGE_ID") == self.image_id and previous.get("LWC_LAYER_SIZE"):
            return Image(self.image_id, int(previous["LWC_LAYER_SIZE"]))
        return Image(self.image_id)

    # -- preparation ------------------------------------------------------------------------
    def prepare(self, cleanup: ExitStack, fetch: Future, keep_container: bool) -> str:
        """CVMFS up and the build container created; returns its name. What a killed run
        left is removed in the background once the automounter has started (the way to the
        mount stays clear), and done before CVMFS is let go (the automounter's release counts
        the builds that still use it)."""
        cvmfs = self.open_cvmfs(cleanup)
        orphans = self.pool.submit(owner.remove_orphans, self.docker)
        cleanup.callback(self.settle_orphans, orphans)
        if cvmfs.source == "none":
            self.await_(fetch)
            self.stages.skip("cvmfs", "LWC_CVMFS=none")
            return cleanup.enter_context(self.build_container(cvmfs, keep_container))
        with self.stages.stage("cvmfs"), progress("waiting for CVMFS", self.s.progress_interval):
            deadline = time.monotonic() + self.s.cvmfs_timeout
            with cvmfs.lease(self.pool, self.running):  # a shared automounter is in use from now on
                if not fetch.done():
                    cvmfs.wait_mounted(deadline, fetch)
                waited = time.monotonic()
                self.await_(fetch)
                deadline += time.monotonic() - waited  # time spent pulling is not CVMFS's
                # the build container checks every repository itself, before the build script
                wait_s = max(1, math.ceil(deadline - time.monotonic()))
                self.log.info("cvmfs_check", where="build container", wait_s=wait_s,
                              repos=list(self.s.cvmfs_repos), source=cvmfs.source)
                return cleanup.enter_context(self.build_container(cvmfs, keep_container,
                                                                  cvmfs_wait=wait_s))

    def settle_orphans(self, orphans: Future) -> None:
        """Wait for the orphan removal; say so if it failed (nothing else depends on it)."""
        wait((orphans,))
        failed = orphans.exception()
        if failed is not None:
            self.log.warning("orphans_unchecked", error=self.x.masker(str(failed)[-300:]))

    def build_container(self, cvmfs: CvmfsSource, keep: bool = False,
                        existing: str | None = None,
                        cvmfs_wait: int | None = None) -> BuildContainer:
        self.cvmfs, self.cvmfs_wait = cvmfs, cvmfs_wait
        self.build_box = BuildContainer(self.s, self.docker, cvmfs.volume(), keep=keep,
                                        existing=existing, options=self.create_options(),
                                        cvmfs_wait=cvmfs_wait)
        return self.build_box

    def await_(self, future: Future) -> None:
        """Wait in short steps (signals are handled in between); re-raise its failure."""
        while not settled(future, 0.2):
            pass

    def open_cvmfs(self, cleanup: ExitStack) -> CvmfsSource:
        """Choose where /cvmfs comes from and enter it (starting an automounter if needed)."""
        source, reason = choose_source(self.s, self.address.address)
        self.check_cvmfs_source(source, reason)
        self.log.info("cvmfs_source", source=source, reason=reason)
        self.cvmfs_source = source
        if source != "automounter":
            return cleanup.enter_context(SOURCES[source](self.s, self.docker))
        with self.stages.stage("automounter"):
            return cleanup.enter_context(self.automounter())

    def automounter(self) -> Automounter:
        """The automounter, its image pulled (when missing) as this engine pulls."""
        image = str(self.s.automounter_image)
        return Automounter(self.s, self.docker, pull=self.pull_argv(image))

    def wait_cvmfs(self, cvmfs: CvmfsSource, image: str) -> None:
        """CVMFS as a container of ``image`` sees it (for 'automount' and 'run')."""
        if cvmfs.source == "none":
            return
        with self.stages.stage("cvmfs"), progress("waiting for CVMFS", self.s.progress_interval):
            deadline = time.monotonic() + self.s.cvmfs_timeout
            with cvmfs.probe(image, deadline, self.pool) as probe:
                probe.wait()
            cvmfs.ready()

    # -- stages -----------------------------------------------------------------------------
    def wait_daemon(self) -> None:
        with self.stages.stage("wait-daemon"), progress("waiting for the Docker engine",
                                                        self.s.progress_interval):
            where = self.address.address or DEFAULT_ADDRESS
            self.log.info("engine_address", address=where, reason=self.address.reason)
            if self.s.engine_answered:  # choosing the engine just asked it (engines/choice.py)
                self.log.info("engine_ready", version=self.s.engine_answered, asked="by the choice")
                return
            deadline = time.monotonic() + self.s.docker_timeout
            if self.address.cert_path and not self.x.dry_run:
                self.wait_for_certificates(Path(self.address.cert_path), deadline)
            delay = 0.1
            while True:
                done = self.docker.run(commands.server_version(), check=False,
                                       placeholder="(engine version)",
                                       timeout=max(deadline - time.monotonic(), 1.0),
                                       timeout_setting="LWC_DOCKER_TIMEOUT")
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

    def login_then_pull(self) -> None:
        """The background half of the preparation: FROM is inspected while logging in."""
        with pool(self.x.dry_run, "lwc-inspect", 1) as beside:
            present = beside.submit(self.check_base)
            self.login(background=True)
            self.pull(background=True, must=present.result())

    def login(self, background: bool = False) -> None:
        if not self.s.registry:
            self.stages.skip("login", "no registry configured (CI_REGISTRY unset)", background)
            return
        with self.stages.stage("login", background):
            step = self.docker.step(self.login_argv(), stdin=self.s.registry_password,
                                    retries=2, check=False,
                                    what=f"{self.cli.program} login {self.s.registry}")
            done = self.x.run(step)
            if not done.ok:
                raise login_failure(self.s.registry, self.x.failure_message(step, done), done)
            self.logged_in = True

    def inspect_base(self) -> dict | None:
        done = self.docker.run(commands.image_inspect(str(self.s.from_image)), check=False)
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

    def pull(self, background: bool = False, must: bool | None = None) -> None:
        """FROM, unless it is there (``must``: what ``check_base`` said already)."""
        ref = str(self.s.from_image)
        if not (self.check_base() if must is None else must):
            self.stages.skip("pull", f"{ref} is present and LWC_PULL={self.s.pull}", background)
            return
        with self.stages.stage("pull", background), progress(f"pulling {ref}",
                                                             self.s.progress_interval):
            done = self.docker.run(self.pull_argv(ref), retries=3,
                                   what=f"{self.cli.program} pull {ref}",
                                   check=False, retry_if=worth_retrying_pull)
            if not done.ok:
                raise pull_failure("FROM", ref, done, logged_in=self.logged_in and
                                   self.s.from_image.normalized.domain == self.s.registry)
            self.base = self.inspect_base() or {}

    def base_digest(self) -> str | None:
        if self.s.from_image.digest:
            return self.s.from_image.digest
        return repo_digest(self.base, self.s.from_image.normalized.repository) or None

    def tag(self) -> None:
        """The commit named the image after the first target (TO); the others here."""
        with self.stages.stage("tag"):
            self.log.info("tagged", tag=str(self.s.targets[0]), by="commit")
            for target in self.s.targets[1:]:
                self.docker.run(commands.tag(self.image_id, str(target)), error=CommitError,
                                what=f"{self.cli.program} tag {target}")

    def push(self) -> str:
        said = ""  # what TO's push printed
        with self.stages.stage("push"), progress("pushing", self.s.progress_interval):
            for target in self.s.targets:
                step = self.docker.step(self.push_argv(str(target)),
                                        retries=self.s.push_retries,
                                        what=f"{self.cli.program} push {target}", check=False,
                                        placeholder=f"{target.tag or 'latest'}: digest: sha256:"
                                                    + "0" * 64 + " size: 0")
                done = self.x.run(step)
                if not done.ok:
                    raise PushError(
                        f"{self.x.failure_message(step, done)}. The image is kept, tagged "
                        f"locally as {', '.join(map(str, self.s.targets))}; push again with "
                        f"'lwcontainer push' (same settings) once the registry is back")
                self.log.info("pushed", tag=str(target))
                if str(target) == str(self.s.to_image):
                    said = done.stdout
            return self.pushed_digest(said)

    def pushed_digest(self, said: str = "") -> str:
        """TO's ``repository@digest``: the registry's digest of the manifest as TO's push
        printed it (``TAG: digest: sha256:… size: N``), else as the engine recorded it after the
        push (RepoDigests, one more call)."""
        tag = self.s.to_image.tag or "latest"
        for line in said.splitlines():
            found = PUSHED.fullmatch(line.strip())
            if found and found["tag"] == tag:
                return f"{self.s.to_image.repository}@{found['digest']}"
        done = self.docker.run(commands.image_inspect(self.image_id), check=False,
                               placeholder=json.dumps([{"RepoDigests": [
                                   f"{self.s.to_image.repository}@sha256:" + "0" * 64]}]))
        if not done.ok or not done.stdout.strip():
            return ""
        digest = repo_digest(json.loads(done.stdout)[0], self.s.to_image.normalized.repository)
        return f"{self.s.to_image.repository}@{digest}" if digest else ""


def repo_digest(inspected: Mapping, repository: str) -> str:
    """The digest an image inspection records for ``repository`` (fully qualified), from its
    ``RepoDigests`` (``name@sha256:...``, the name spelled as the engine likes); "" if none."""
    for entry in inspected.get("RepoDigests") or ():
        name, _, digest = entry.partition("@")
        try:
            if parse(name).normalized.repository == repository:
                return digest
        except InvalidReference:
            continue
    return ""
