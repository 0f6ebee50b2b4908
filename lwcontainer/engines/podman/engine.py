"""The podman engine (LWC_ENGINE=podman): the docker engine's stages, run by podman, as root or
rootless (an ordinary user with a subuid range; no daemon, no privileges).

Where the CLIs agree (create, start, rm, run, exec, tag, image inspect, the probe) this is the
docker engine. It differs in:
- the ``EngineCli``: program ``podman``; no address (podman runs here, in the user's storage;
  CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and the user's containers.conf are podman's own and
  reach it unchanged); the login goes to a private auth file of the run (``--authfile``, in
  $XDG_RUNTIME_DIR when usable, else $TMPDIR), never the user's;
- the first stage: nothing to wait for; ``podman info`` opens the storage and says whether podman
  runs rootless;
- TLS: registries on the loopback range and in LWC_INSECURE_REGISTRIES get
  ``--tls-verify=false`` (docker's rule for the loopback range), every other keeps TLS;
- pull by the fully qualified name (docker's normalisation: no short-name resolution);
- the build container without the variables podman adds (TERM, container), which a commit
  would keep; the commit in docker's image format (ONBUILD, HEALTHCHECK kept, see commands.py);
- push with ``--digestfile``: the digest from podman itself;
- CVMFS: the host's CVMFS works as root and rootless; the automounter only as root, where the
  automounter options allow it (a rootless run that needs it stops at once).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from . import commands as podman
from ..cli import EngineCli
from ..docker.address import EngineAddress
from ..docker.dockerconfig import private_path, remove_stale, temporary_dir
from ..docker.engine import DockerEngine
from ...config.reference import InvalidReference, insecure_registry, parse
from ...errors import ConfigError, EngineError
from ...output.logs import get_logger
from ...output.progress import progress

PREFIX = "lwc-podman-auth-"
AUTH_FILE = "auth.json"
PROGRAM = "podman"


def runtime_dir(environ: Mapping[str, str]) -> Path | None:
    """$XDG_RUNTIME_DIR, where podman keeps its own auth file, when it is usable: a directory
    of this user's, which no one else may enter (a tmpfs, normally); else None ($TMPDIR)."""
    value = environ.get("XDG_RUNTIME_DIR")
    if not value or not os.path.isabs(value):
        return None
    try:
        found = os.stat(value)
    except OSError:
        return None
    usable = (stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid()
              and not found.st_mode & 0o077 and os.access(value, os.W_OK | os.X_OK))
    return Path(value) if usable else None


class PodmanEngine(DockerEngine):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rootless = os.geteuid() != 0  # confirmed by 'podman info' in the first stage
        self.digest_file: str | None = None

    # -- the seam ---------------------------------------------------------------------------
    def locate(self, environ: Mapping[str, str], local_socket: Path) -> EngineAddress:
        return EngineAddress({}, "podman runs here, in this user's own storage (no daemon)")

    def make_cli(self, environ: Mapping[str, str]) -> EngineCli:
        directory = private_path(self.s, PREFIX, runtime_dir(environ))
        return EngineCli(program=PROGRAM, title="podman",
                         reason=self.address.reason,
                         auth=str(directory / AUTH_FILE) if directory else None,
                         auth_option="--authfile", label_format=podman.LABEL_FORMAT,
                         state_format=podman.STATE_FORMAT,
                         remove_options=podman.REMOVE_OPTIONS)

    @contextmanager
    def private_context(self) -> Iterator[None]:
        """A directory of the run's own (0700) holding an empty auth file: podman's login
        writes there, and it is deleted at the end; one a killed run left is removed next time.
        It lies in $XDG_RUNTIME_DIR when that is usable (runtime_dir), else in $TMPDIR."""
        if not self.cli.auth or self.x.dry_run:
            yield
            return
        directory = Path(self.cli.auth).parent
        for parent in {directory.parent, temporary_dir()}:  # ($TMPDIR: where it was before)
            remove_stale(parent, PREFIX)
        directory.mkdir(mode=0o700)
        fd = os.open(self.cli.auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write('{"auths": {}}\n')
        try:
            yield
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            get_logger().info("login_discarded", registry=self.s.registry,
                              reason="private auth file of this run removed "
                                     "(LWC_KEEP_LOGIN unset)")

    def auth(self) -> tuple[str, ...]:
        """--authfile of the run, once it exists (or in a dry run, to show it)."""
        args = self.cli.auth_args(self.private_login)
        if args and not self.x.dry_run and not Path(args[1]).is_file():
            return ()
        return args

    def insecure(self, host: str | None) -> bool:
        """``host``: a reference's registry, None when it names none (TLS kept)."""
        return insecure_registry(host, self.s.insecure_registries)

    # -- argv where podman differs ----------------------------------------------------------
    def login_argv(self) -> tuple[str, ...]:
        return podman.login(self.s.registry, self.s.registry_user or "", self.auth(),
                            self.insecure(self.s.registry))

    def pull_argv(self, ref: str) -> tuple[str, ...]:
        try:
            name = parse(ref).normalized
        except InvalidReference:  # FROM was parsed already; keep it as given
            return podman.pull(ref, self.auth(), False)
        return podman.pull(str(name), self.auth(), self.insecure(name.domain))

    def push_argv(self, ref: str) -> tuple[str, ...]:
        target = parse(ref)
        digest = self.digest_file if ref == str(self.s.to_image) else None
        return podman.push(ref, self.auth(), self.insecure(target.normalized.domain), digest)

    def commit_argv(self, changes: tuple[str, ...]) -> tuple[str, ...]:
        return podman.commit(self.container, changes, str(self.s.targets[0]))

    def create_options(self) -> tuple[str, ...]:
        known = self.base.get("Config")
        env = known.get("Env") if known else None
        return podman.unset_added(env)

    # -- stages where podman differs --------------------------------------------------------
    def wait_daemon(self) -> None:
        """Nothing to wait for: podman opens its storage and says how it runs."""
        with self.stages.stage("check-engine"), progress("starting podman",
                                                         self.s.progress_interval):
            self.log.info("engine_address", address="podman (no daemon)",
                          reason=self.address.reason)
            step = self.docker.step(podman.check(), check=False, what="podman info",
                                    placeholder="true" if self.rootless else "false")
            done = self.x.run(step)
            if not done.ok:
                raise EngineError(
                    f"{self.x.failure_message(step, done)}. "
                    "Podman's own settings are its containers.conf and storage.conf "
                    "(CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, ~/.config/containers/); a "
                    "rootless user needs a range in /etc/subuid and /etc/subgid")
            self.rootless = done.stdout.strip() == "true"
            self.log.info("engine_ready", engine=PROGRAM, rootless=self.rootless)

    def check_cvmfs_source(self, source: str, reason: str) -> None:
        if source == "automounter" and self.rootless:
            raise ConfigError("LWC_CVMFS", f"the automounter ({reason}) needs root: a rootless "
                                           "podman cannot mount CVMFS for the build. Use the "
                                           "host's CVMFS client: install it, then LWC_CVMFS="
                                           "host (LWC_CVMFS_HOST_DIR, default /cvmfs)")

    def open_cvmfs(self, cleanup):
        """docker's; then the automounter's host directory is made to exist: docker creates a
        missing bind-mount source, podman refuses it ("statfs …: no such file or directory")."""
        cvmfs = super().open_cvmfs(cleanup)
        if cvmfs.source == "automounter" and not self.x.dry_run:
            Path(self.s.cvmfs_mounts, "cvmfs").mkdir(parents=True, exist_ok=True)
        return cvmfs

    def push(self) -> str:
        """docker's push, each tag; TO's push writes its digest to a file of this run."""
        if self.x.dry_run:
            self.digest_file = "<digest file>"
            return super().push()
        with tempfile.TemporaryDirectory(prefix="lwc-podman-digest-") as directory:
            self.digest_file = str(Path(directory) / "digest")
            try:
                return super().push()
            finally:
                self.digest_file = None

    def pushed_digest(self, said: str = "") -> str:
        """TO's ``repository@digest``, from the digest file podman wrote (its push prints
        none)."""
        if self.x.dry_run:
            return f"{self.s.to_image.repository}@sha256:" + "0" * 64
        try:
            digest = Path(self.digest_file or "").read_text().strip()
        except OSError:
            return ""
        return f"{self.s.to_image.repository}@{digest}" if digest.startswith("sha256:") else ""
