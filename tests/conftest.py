"""Test-bed access for the end-to-end tests (``@pytest.mark.docker``).

scripts/testbed.sh brings up the real engine, registry and fixture images and writes their
addresses to an env file; these fixtures read it. Without a test bed the docker tests skip,
unless LWC_REQUIRE_DOCKER=1 (CI), where they fail.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from contextlib import contextmanager
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "scripts" / "example-analysis"

ENV_FILE = Path(os.environ.get("LWC_TESTBED_ENV", "/run/lwc-testbed/env"))
#: The package under test, also in the lwcontainer processes tests start (a worktree's, not
#: whichever one the interpreter has installed).
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
STANDIN_OPTIONS = ("--cap-add SYS_ADMIN --security-opt seccomp=unconfined "
                   "--security-opt apparmor=unconfined")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def records(self) -> list[dict]:
        """The JSON log records lwcontainer wrote to stderr (other lines are the build's)."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records if r.get("event") == name]

    def stages(self, outcome: str = "ok") -> list[str]:
        return [r["stage"] for r in self.events("stage_done") if r.get("outcome") == outcome]


@dataclass
class Testbed:
    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    @property
    def password(self) -> str:
        return Path(self.values["LWC_TESTBED_PASSWORD_FILE"]).read_text().strip()

    def docker(self, *args: str, check: bool = True, input: str | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "--host", self.values["DOCKER_HOST"], *args],
                              capture_output=True, text=True, check=check, input=input,
                              env=env)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    reason = None
    if not ENV_FILE.is_file():
        reason = f"no test bed ({ENV_FILE} missing): run 'make test' or scripts/testbed.sh up"
    else:
        bed = Testbed({k: v for k, v in dotenv_values(ENV_FILE).items() if v is not None})
        if bed.docker("version", check=False).returncode != 0:
            reason = f"the test-bed engine at {bed['DOCKER_HOST']} does not answer"
    if reason:
        if os.environ.get("LWC_REQUIRE_DOCKER") == "1":
            pytest.fail(f"LWC_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    return bed


@dataclass
class Job:
    """One isolated lwcontainer job on the test bed: its own project copy, CVMFS mounts
    directory, automounter name, registry repository and HOME (so its docker login too)."""

    bed: Testbed
    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        self.project = self.root / "analysis"
        self.fresh_checkout()
        self.home = self.root / "home"
        self.home.mkdir()
        self.mounts = Path(self.bed["LWC_TESTBED_SHARED"]) / f"job-{self.token}"
        self.mounts.mkdir(parents=True)
        self.automounter = f"cvmfs-{self.token}"
        self.repository = f"{self.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/ana-{self.token}"

    def fresh_checkout(self) -> None:
        """A clean copy of the example analysis: the lesson's build.sh moves code out of it."""
        shutil.rmtree(self.project, ignore_errors=True)
        shutil.copytree(EXAMPLE, self.project, symlinks=True)
        # GitLab checks out with umask 0000; the build user moves code out of the checkout.
        for path in [self.project, *self.project.rglob("*")]:
            path.chmod(0o777 if path.is_dir() or os.access(path, os.X_OK) else 0o666)

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "DOCKER_HOST": self.bed["DOCKER_HOST"],
            "LWC_LOG_FORMAT": "json",
            "FROM": self.bed["LWC_TESTBED_CMS_BASE"],
            "LWC_CVMFS_MOUNTS": str(self.mounts),
            "LWC_AUTOMOUNTER_IMAGE": self.bed["LWC_TESTBED_AUTOMOUNTER"],
            "LWC_AUTOMOUNTER_NAME": self.automounter,
            "LWC_AUTOMOUNTER_OPTIONS": STANDIN_OPTIONS + " -e LWC_STANDIN_DELAY=0.5",
            "CI_PROJECT_NAME": f"t{self.token}",
            "CI_REGISTRY": self.bed["LWC_TESTBED_REGISTRY"],
            "CI_REGISTRY_USER": self.bed["LWC_TESTBED_USER"],
            "CI_JOB_TOKEN": self.bed.password,
            "CI_REGISTRY_IMAGE": self.repository,
            "CI_COMMIT_SHORT_SHA": "c0ffee12",
            "LWC_PUSH_RETRIES": "1",
            **PYTHONPATH,
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, *args: str, timeout: float = 300, **overrides: str | None) -> Result:
        done = subprocess.run([sys.executable, "-m", "lwcontainer", *args], cwd=self.project,
                              env=self.env(**overrides), capture_output=True, timeout=timeout)
        # Decoded by hand: text mode would turn the '\r' of CI log markers into '\n'.
        return Result(done.returncode, done.stdout.decode(errors="replace"),
                      done.stderr.decode(errors="replace"))

    def popen(self, *args: str, **overrides: str | None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lwcontainer", *args], cwd=self.project,
                                env=self.env(**overrides), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def containers(self) -> list[str]:
        """Containers of this job still in the engine (build containers and automounter)."""
        names = self.bed.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        return [n for n in names if f"t{self.token}" in n or n == self.automounter]

    def leftover_mounts(self) -> list[str]:
        prefix = str(self.mounts) + "/"
        with open("/proc/self/mountinfo") as info:
            return [line.split()[4] for line in info if line.split()[4].startswith(prefix)]

    def cleanup(self) -> None:
        for name in self.containers():
            self.bed.docker("rm", "-f", name, check=False)
        for mount in sorted(self.leftover_mounts(), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.mounts, ignore_errors=True)
        images = self.bed.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        mine = [i for i in images if i.startswith(self.repository)]
        if mine:
            self.bed.docker("rmi", "-f", *mine, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def own_registry(job: Job, tmp_path: Path, port: int, readonly: bool,
                 anonymous_storage: Path | None = None, auth: str | None = None,
                 access_log: Path | None = None):
    """A registry of the test's own on ``port``, on the test bed's storage and passwords; or,
    with ``anonymous_storage``, a registry anyone may read and write, on storage of its own.
    ``access_log``: where its request log goes (one line per request, as the registry logs)."""
    config = Path(job.bed["LWC_TESTBED_REGISTRY_CONFIG"]).read_text()
    if anonymous_storage is not None:
        config = re.sub(r"rootdirectory: .*}", f"rootdirectory: {anonymous_storage}}}", config)
        config = re.sub(r"auth:\n(  .*\n)+", "", config + "\n")
    if auth is not None:  # another authentication (the token service of a test)
        config = re.sub(r"auth:\n(  .*\n)+", auth, config + "\n")
    config = re.sub(r'addr: "127\.0\.0\.1:\d+"', f'addr: "127.0.0.1:{port}"', config)
    config = config.replace("readonly: {enabled: false}",
                            f"readonly: {{enabled: {str(readonly).lower()}}}")
    path = tmp_path / f"registry-{port}-{readonly}.yml"
    path.write_text(config)
    log = access_log.open("ab") if access_log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if access_log is not None:
            log.close()


@pytest.fixture
def job(testbed: Testbed, tmp_path: Path):
    job = Job(testbed, tmp_path)
    yield job
    job.cleanup()


@pytest.fixture(scope="session")
def base(testbed, tmp_path_factory) -> str:
    """The CMS-like base, pushed to the test registry (a CI runner pulls FROM from there):
    FROM of the in-place and pipeline-run tests."""
    config = tmp_path_factory.mktemp("docker-config")
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    testbed.docker("login", "--username", testbed["LWC_TESTBED_USER"], "--password-stdin",
                   testbed["LWC_TESTBED_REGISTRY"], input=testbed.password, env=env)
    tag = testbed["LWC_TESTBED_CMS_BASE"].rsplit(":", 1)[1]
    ref = f"{testbed['LWC_TESTBED_REGISTRY']}/lwc-tests/inplace-base:{tag}"
    testbed.docker("tag", testbed["LWC_TESTBED_CMS_BASE"], ref)
    testbed.docker("push", ref, env=env)
    return ref


def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "testbed" in fixtures or "job" in fixtures:
            item.add_marker(pytest.mark.docker)


def lwc(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LWC_LOG_FORMAT": "json",
            "LWC_ENGINE": "docker", **PYTHONPATH}
    return subprocess.run([sys.executable, "-m", "lwcontainer", *args], cwd=cwd,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    return tmp_path


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A test that runs the CLI in-process configures structlog for its captured streams."""
    yield
    import structlog
    structlog.reset_defaults()
