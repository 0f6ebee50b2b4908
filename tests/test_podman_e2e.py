"""The podman engine on the real test bed: rootless as an ordinary user (a subuid range, not in
the docker group, lwcontainer's dependencies in a venv of that user), and rootful beside the
bed's running Docker engine. Podman is configured the podman way (containers.conf and
storage.conf named by CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, scripts/testbed.sh writes
them); lwcontainer has no setting of its own for any of it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values
from plumbum import local

from conftest import EXAMPLE, ROOT, Result, free_port, own_registry
from lwcontainer.config.settings import Settings
from lwcontainer.engines import make_engine
from lwcontainer.engines.choice import choose_engine
from lwcontainer.engines.docker import commands, owner
from lwcontainer.executor import Executor
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Stages

FIXTURE_CVMFS = ROOT / "tests" / "fixtures" / "cvmfs"
ANALYSIS = "CMSSW_10_6_8_patch1/bin/slc7_amd64_gcc820/myanalysis"
ANALYSIS_SAYS = "MyAnalysis built against CMSSW_10_6_8_patch1 from fixture CVMFS"
OCI = "org.opencontainers.image."


def podman_bed(testbed) -> None:
    """The bed's podman part, or a failure under LWC_REQUIRE_DOCKER=1 (never a silent skip)."""
    missing = [key for key in ("LWC_TESTBED_PODMAN_USER", "LWC_TESTBED_PODMAN_PYTHON")
               if not testbed.values.get(key)]
    if not missing and not shutil.which("podman"):
        missing = ["podman"]
    if missing:
        reason = f"the test bed has no podman ({', '.join(missing)}): scripts/testbed.sh up"
        if os.environ.get("LWC_REQUIRE_DOCKER") == "1":
            pytest.fail(f"LWC_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


@dataclass
class User:
    """The bed's ordinary user, with a checkout of its own (GitLab's permissive modes), this
    checkout's lwcontainer package and a copy of the fixture CVMFS, all in a directory it can
    read."""

    bed: object
    root: Path

    @property
    def name(self) -> str:
        return self.bed["LWC_TESTBED_PODMAN_USER"]

    @property
    def project(self) -> Path:
        return self.root / "analysis"

    @property
    def cvmfs(self) -> Path:
        return self.root / "cvmfs"

    @property
    def home(self) -> Path:
        return Path(f"~{self.name}").expanduser()

    def prepare(self) -> None:
        self.root.chmod(0o755)
        shutil.copytree(ROOT / "lwcontainer", self.root / "lwcontainer",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(FIXTURE_CVMFS, self.cvmfs)
        self.fresh_checkout()
        for path in [*(self.root / "lwcontainer").rglob("*"), *self.cvmfs.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)

    def fresh_checkout(self) -> None:
        """The example analysis (its build moves code out of the checkout), owned by the user."""
        shutil.rmtree(self.project, ignore_errors=True)
        shutil.copytree(EXAMPLE, self.project, symlinks=True)
        for path in [self.project, *self.project.rglob("*")]:
            path.chmod(0o777 if path.is_dir() or os.access(path, os.X_OK) else 0o666)
            shutil.chown(path, self.name)

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": self.bed["LWC_TESTBED_PODMAN_RUNTIME"],
            "CONTAINERS_CONF": self.bed["LWC_TESTBED_PODMAN_CONF_USER"],
            "CONTAINERS_STORAGE_CONF": self.bed["LWC_TESTBED_PODMAN_STORAGE_USER"],
            "PYTHONPATH": str(self.root),
            "LWC_LOG_FORMAT": "json",
            "FROM": self.bed["LWC_TESTBED_CMS_BASE"],
            "LWC_CVMFS": "host",
            "LWC_CVMFS_HOST_DIR": str(self.cvmfs),
            "CI_PROJECT_NAME": "podman-user",
            "CI_COMMIT_SHORT_SHA": "c0ffee12",
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    def command(self, argv: list[str], env: dict[str, str], cwd: Path | None = None,
                stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """``argv`` as the user, with exactly ``env`` (runuser, then env -i)."""
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i",
                               *(f"{k}={v}" for k, v in env.items()), *argv],
                              cwd=cwd or self.project, capture_output=True, input=stdin,
                              timeout=timeout)

    def lwcontainer(self, *args: str, **overrides: str | None) -> Result:
        done = self.command([self.bed["LWC_TESTBED_PODMAN_PYTHON"], "-m", "lwcontainer", *args],
                            self.env(**overrides))
        return Result(done.returncode, done.stdout.decode(errors="replace"),
                      done.stderr.decode(errors="replace"))

    def podman(self, *args: str) -> str:
        done = self.command(["podman", *args], self.env())
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()


@pytest.fixture
def user(testbed):
    podman_bed(testbed)
    root = Path(tempfile.mkdtemp(prefix="lwc-podman-user-"))
    person = User(testbed, root)
    person.prepare()
    yield person
    # Every image the test made, tagged or left untagged by a later build (vfs: each a full
    # copy of the base), leaves the user's store; the base stays.
    base = person.podman("image", "inspect", "--format", "{{.Id}}",
                         testbed["LWC_TESTBED_CMS_BASE"]).strip()
    made = {i for i in person.podman("images", "--all", "--no-trunc", "--format",
                                     "{{.ID}}").split() if i.removeprefix("sha256:") != base}
    if made:
        person.podman("rmi", "--force", *made)
    shutil.rmtree(root, ignore_errors=True)


def registry_env(testbed, tmp_path: Path) -> dict[str, str]:
    """The verifier's own docker config, logged in to the bed's registry."""
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "verifier")}
    testbed.docker("login", "--username", testbed["LWC_TESTBED_USER"], "--password-stdin",
                   testbed["LWC_TESTBED_REGISTRY"], input=testbed.password, env=env)
    return env


def check_pushed_image(testbed, tmp_path: Path, ref: str, report: dict, cvmfs: Path) -> None:
    """Pulled back by the bed's Docker engine: runs the analysis with /cvmfs mounted, keeps the
    base's CMD, WORKDIR, USER and ENV, has exactly one layer more, carries the labels."""
    client = registry_env(testbed, tmp_path)
    testbed.docker("pull", ref, env=client)
    try:
        info = json.loads(testbed.docker("image", "inspect", ref).stdout)[0]
        base = json.loads(testbed.docker("image", "inspect",
                                         testbed["LWC_TESTBED_CMS_BASE"]).stdout)[0]
        assert report["LWC_IMAGE_DIGEST"] in info["RepoDigests"]
        for key in ("Cmd", "WorkingDir", "User", "Env", "Entrypoint"):  # [] and null: none
            assert (info["Config"].get(key) or None) == (base["Config"].get(key) or None), key
        assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        assert info["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
        labels = info["Config"]["Labels"]
        assert labels["lwcontainer.role"] == "image"
        assert labels[OCI + "base.name"] == "docker.io/" + testbed["LWC_TESTBED_CMS_BASE"]
        assert OCI + "created" in labels
        ran = testbed.docker("run", "--rm", "-v", f"{cvmfs}:/cvmfs:ro", ref, "/bin/bash", "-c",
                             "source /cvmfs/cms.cern.ch/cmsset_default.sh && ls /cvmfs "
                             f"&& {ANALYSIS}")
        assert ran.stdout.split() == ["cms.cern.ch", *ANALYSIS_SAYS.split()]
    finally:
        testbed.docker("rmi", ref, check=False)


def files_holding(secret: str, *roots: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if any(path.is_relative_to(s) for s in skip) or path.is_symlink() \
                    or not path.is_file():
                continue
            try:
                if secret.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


# -- rootless ----------------------------------------------------------------------------------
def test_rootless_podman_builds_pushes_and_the_image_runs(user, testbed, tmp_path):
    repository = f"{testbed['LWC_TESTBED_REGISTRY']}/lwc-tests/podman-rootless"
    result = user.lwcontainer(LWC_ENGINE="podman", CI_REGISTRY=testbed["LWC_TESTBED_REGISTRY"],
                              CI_REGISTRY_USER=testbed["LWC_TESTBED_USER"],
                              CI_REGISTRY_PASSWORD=testbed.password,
                              CI_REGISTRY_IMAGE=repository, LWC_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stages() == ["check-engine", "login", "cvmfs", "build", "commit", "tag",
                               "push", "report"]
    runtime = Path(testbed["LWC_TESTBED_PODMAN_RUNTIME"])
    login = next(e["command"] for e in result.events("step") if " login " in e["command"])
    assert f"--authfile {runtime}/lwc-podman-auth-" in login  # the user's tmpfs, as podman's
    assert result.events("engine_ready")[0]["rootless"] is True
    assert ">> Built /home/cmsusr/CMSSW_10_6_8_patch1/bin/" in result.stdout
    report = dotenv_values(user.project / "lwcontainer.env")
    ref = f"{repository}:c0ffee12"
    assert report["LWC_IMAGE"] == ref and report["LWC_CVMFS_SOURCE"] == "host"
    assert report["LWC_IMAGE_DIGEST"].startswith(f"{repository}@sha256:")  # podman's digestfile
    assert report["LWC_IMAGE_ID"].startswith("sha256:")

    # Nothing left in the user's storage but images; no password in any file of the user's.
    assert user.podman("ps", "--all", "--format", "{{.Names}}").split() == []
    storage = user.home / ".local/share/containers/storage"
    owned = [p for parent in (Path(tempfile.gettempdir()), runtime)
             for p in parent.glob("lwc-podman-*") if p.stat().st_uid == user.home.stat().st_uid]
    assert owned == [], "the run's private auth directory is removed"
    assert files_holding(testbed.password, user.home, runtime, user.root,
                         skip=(storage / "vfs", user.home / "venv")) == []
    assert not (user.home / ".config/containers/auth.json").exists()
    assert not (runtime / "containers/auth.json").exists(), "the user's auth file is untouched"
    assert testbed.password not in result.stdout + result.stderr

    check_pushed_image(testbed, tmp_path, ref, report, user.cvmfs)


def test_rootless_needing_the_automounter_stops_at_once(user):
    result = user.lwcontainer(LWC_ENGINE="podman", LWC_CVMFS="automounter")
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.events("failed")[0]["error"]
    assert error.startswith("LWC_CVMFS: the automounter") and "needs root" in error
    assert "host's CVMFS client" in error
    assert "build" not in result.stages() + result.stages("failed")


def test_rootless_user_without_lwc_engine_gets_podman_also_through_a_docker_shim(user, testbed):
    # The bed's Docker socket refuses this user: podman is chosen at once, and builds.
    refused = user.lwcontainer(DOCKER_HOST=testbed["DOCKER_HOST"], LWC_PUSH="never")
    assert refused.returncode == 0, refused.stderr[-3000:]
    chosen = refused.events("engine_chosen")[0]
    assert chosen["engine"] == "podman"
    assert "refuses this user" in chosen["reason"] and "permission denied" in chosen["reason"]
    assert "build" in refused.stages() and "commit" in refused.stages()

    # A `docker` that execs podman (as podman-docker installs one) counts as podman.
    shim = user.root / "shim"
    shim.mkdir()
    (shim / "docker").write_text('#!/bin/sh\nexec podman "$@"\n')
    (shim / "docker").chmod(0o755)
    user.fresh_checkout()
    shimmed = user.lwcontainer(PATH=f"{shim}:/usr/local/bin:/usr/bin:/bin", LWC_PUSH="never")
    assert shimmed.returncode == 0, shimmed.stderr[-3000:]
    chosen = shimmed.events("engine_chosen")[0]
    assert chosen["engine"] == "podman" and "the docker command is podman" in chosen["reason"]
    assert "build" in shimmed.stages()
    assert user.podman("ps", "--all", "--format", "{{.Names}}").split() == []


# -- rootful, beside the bed's Docker engine ---------------------------------------------------
def root_podman(testbed) -> dict[str, str]:
    return {"CONTAINERS_CONF": testbed["LWC_TESTBED_PODMAN_CONF_ROOT"],
            "CONTAINERS_STORAGE_CONF": testbed["LWC_TESTBED_PODMAN_STORAGE_ROOT"],
            "LWC_ENGINE": "podman", "LWC_CVMFS": "host", "LWC_CVMFS_HOST_DIR": str(FIXTURE_CVMFS)}


def docker_events(testbed, since: float, *names: str) -> list[str]:
    """Events of the bed's Docker engine since ``since`` that name any of ``names``."""
    done = testbed.docker("events", "--since", str(int(since)), "--until", str(int(time.time())),
                          "--format", "{{json .}}")
    return [line for line in done.stdout.splitlines() if any(n in line for n in names)]


def podman_root(testbed, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **root_podman(testbed)}
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True)


def test_rootful_podman_beside_docker_builds_pushes_runs_and_leaves_docker_alone(job, tmp_path):
    podman_bed(job.bed)
    since = time.time() - 1
    result = job.run(**root_podman(job.bed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.events("engine_ready")[0]["rootless"] is False
    report = dotenv_values(job.project / "lwcontainer.env")
    ref = f"{job.repository}:c0ffee12"
    try:
        # 'lwcontainer run' in the built image, CVMFS mounted as for the build.
        ran = job.run("run", "--", "/bin/bash", "-c", f"ls /cvmfs && {ANALYSIS}",
                      **root_podman(job.bed))
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.split() == ["cms.cern.ch", *ANALYSIS_SAYS.split()]
        names = [n for n in podman_root(job.bed, "ps", "--all", "--format",
                                        "{{.Names}}").stdout.split() if f"t{job.token}" in n]
        assert names == []
    finally:
        podman_root(job.bed, "rmi", "--force", ref)
    # Nothing of the Docker engine was touched: no event names this job, no container came.
    assert docker_events(job.bed, since, f"t{job.token}", job.repository) == []
    assert job.containers() == []
    assert job.bed.docker("image", "inspect", ref, check=False).returncode != 0
    check_pushed_image(job.bed, tmp_path, ref, report, FIXTURE_CVMFS)


def test_rootful_podman_runs_the_automounter_where_its_options_allow(job):
    """Rootful podman, LWC_CVMFS=automounter (the stand-in, with the options the bed allows):
    CVMFS mounts with real propagation, the build compiles, nothing is left running or
    mounted."""
    podman_bed(job.bed)
    env = {**root_podman(job.bed), "LWC_CVMFS": "automounter", "LWC_CVMFS_HOST_DIR": None,
           "LWC_PUSH": "never"}
    try:
        result = job.run(**env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "automounter" in result.stages() and "cvmfs" in result.stages()
        assert ">> Built /home/cmsusr/CMSSW_10_6_8_patch1/bin/" in result.stdout
        assert result.events("automounter_stopped"), "this run started it, and stops it"
        listed = podman_root(job.bed, "ps", "--all", "--format", "{{.Names}}").stdout.split()
        assert [n for n in listed if f"t{job.token}" in n or n == job.automounter] == []
        assert job.leftover_mounts() == []
    finally:
        podman_root(job.bed, "rm", "--force", job.automounter)
        podman_root(job.bed, "rmi", "--force", f"{job.repository}:c0ffee12")


def test_rootful_podman_pulls_the_automounter_image_from_a_loopback_registry(job, tmp_path):
    """The automounter's image on a registry of the loopback range (plain HTTP, as the bed's):
    pulled as podman pulls FROM, with --tls-verify=false; podman's own default would ask it for
    TLS ("server gave HTTP response to HTTPS client")."""
    podman_bed(job.bed)
    port = free_port()
    image = f"127.0.0.1:{port}/lwc-tests/automounter-{job.token}:1"
    env = {**root_podman(job.bed), "LWC_CVMFS": "automounter", "LWC_CVMFS_HOST_DIR": None,
           "LWC_PUSH": "never", "LWC_AUTOMOUNTER_IMAGE": image}
    with own_registry(job, tmp_path, port, readonly=False,
                      anonymous_storage=tmp_path / "storage"):
        try:
            pushed = podman_root(job.bed, "push", "--tls-verify=false",
                                 job.bed["LWC_TESTBED_AUTOMOUNTER"], image)
            assert pushed.returncode == 0, pushed.stderr
            assert podman_root(job.bed, "image", "exists", image).returncode == 1
            result = job.run(**env)
            assert result.returncode == 0, result.stderr[-3000:]
            assert "automounter" in result.stages() and "build" in result.stages()
            assert podman_root(job.bed, "image", "exists", image).returncode == 0  # pulled
        finally:
            podman_root(job.bed, "rm", "--force", "--time", "0", job.automounter)
            podman_root(job.bed, "rmi", "--force", image, f"{job.repository}:c0ffee12")


def test_podman_keeps_the_bases_healthcheck_and_onbuild_as_the_docker_engine_does(job, tmp_path):
    """The commit's image format is docker's: a base's HEALTHCHECK and ONBUILD survive, as they
    do with the docker engine (OCI's image config has neither)."""
    podman_bed(job.bed)
    base = f"lwc-tests/hc-base-{job.token}:1"
    dockerfile = (f"FROM {job.bed['LWC_TESTBED_CMS_BASE']}\nHEALTHCHECK --interval=30s CMD true\n"
                  "ONBUILD RUN echo onbuild\n")
    job.bed.docker("build", "-q", "-t", base, "-", input=dockerfile)
    ref = f"{job.repository}:c0ffee12"
    try:
        saved = subprocess.run(["docker", "--host", job.bed["DOCKER_HOST"], "save", base],
                               capture_output=True, check=True)
        loaded = subprocess.run(["podman", "load", "-q"], input=saved.stdout,
                                env={**os.environ, **root_podman(job.bed)}, capture_output=True)
        assert loaded.returncode == 0, loaded.stderr
        result = job.run(FROM=base, **root_podman(job.bed))
        assert result.returncode == 0, result.stderr[-3000:]
        client = registry_env(job.bed, tmp_path)
        job.bed.docker("pull", ref, env=client)
        built = json.loads(job.bed.docker("image", "inspect", ref).stdout)[0]["Config"]
        original = json.loads(job.bed.docker("image", "inspect", base).stdout)[0]["Config"]
        assert built["Healthcheck"] == original["Healthcheck"] == {
            "Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000}
        assert built["OnBuild"] == original["OnBuild"] == ["RUN echo onbuild"]
    finally:
        podman_root(job.bed, "rmi", "--force", ref, base)
        job.bed.docker("rmi", ref, base, check=False)


def test_rootful_podman_single_stage_subcommands(job):
    podman_bed(job.bed)
    ref = f"{job.repository}:c0ffee12"
    try:
        built = job.run("build", **root_podman(job.bed))
        assert built.returncode == 0, built.stderr[-2000:]
        container = dotenv_values(job.project / "lwcontainer.env")["LWC_BUILD_CONTAINER"]
        listed = podman_root(job.bed, "ps", "--all", "--format", "{{.Names}}").stdout.split()
        assert container in listed
        committed = job.run("commit", **root_podman(job.bed))
        assert committed.returncode == 0, committed.stderr[-2000:]
        assert container not in podman_root(job.bed, "ps", "--all", "--format",
                                            "{{.Names}}").stdout.split()
        pushed = job.run("push", **root_podman(job.bed))
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        report = dotenv_values(job.project / "lwcontainer.env")
        assert report["LWC_IMAGE_DIGEST"].startswith(f"{job.repository}@sha256:")
    finally:
        podman_root(job.bed, "rmi", "--force", ref)


def podman_engine(job, **env: str):
    """The podman engine of a run on the bed's rootful podman, in this process (its steps are
    real podman commands)."""
    environ = {**os.environ, **root_podman(job.bed), **env}
    s = Settings.from_mapping({**job.env(**root_podman(job.bed)), **env}, cwd=job.project)
    x = Executor(Masker(), backoff=0)
    return make_engine(s, x, Stages(s, Masker(), None), environ)


def labelled(job, name: str, made_by: str, *command: str, keep: bool = False) -> None:
    """A running container of rootful podman, labelled as a build of the run ``made_by``."""
    done = podman_root(job.bed, "run", "--detach", "--name", name, "--label",
                       f"{commands.BUILD_ROLE_LABEL}=build",
                       *commands.owner_labels(made_by, keep), *command)
    assert done.returncode == 0, done.stderr


def test_rootful_podman_counts_a_running_build_as_in_use_and_a_dead_runs_kept_one_as_orphan(job):
    """A running build container of a live run keeps a shared automounter in use; a kept one
    still running whose run is gone (killed) is an orphan, removed."""
    podman_bed(job.bed)
    live, dead = f"lwc-t{job.token}-live", f"lwc-t{job.token}-dead"
    gone = str(owner.Owner(owner.this_host(), 999_999_999, "1"))  # no such process
    image = job.bed["LWC_TESTBED_AUTOMOUNTER"]
    try:
        labelled(job, live, str(owner.this_process()), image, "sleep", "300")
        labelled(job, dead, gone, image, "sleep", "300", keep=True)
        in_use = owner.remove_orphans(podman_engine(job).docker)
        mine = {c.name: c.state for c in in_use if c.name in (live, dead)}
        assert mine == {live: "running"}
        listed = podman_root(job.bed, "ps", "--all", "--format", "{{.Names}}").stdout.split()
        assert live in listed and dead not in listed
    finally:   # one at a time: podman 4.3 removes none of a list that names a missing one
        for name in (live, dead):
            podman_root(job.bed, "rm", "--force", "--ignore", "--time", "0", name)
        assert not podman_root(job.bed, "ps", "--all", "--quiet", "--filter",
                               f"name=lwc-t{job.token}-").stdout.strip()


def test_a_docker_link_to_the_real_podman_chooses_podman(job, tmp_path):
    """The real podman through a link named docker says "docker version …" and answers
    'version' as an engine would: the link's target decides."""
    podman_bed(job.bed)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "docker").symlink_to(shutil.which("podman"))
    (shim / "podman").symlink_to(shutil.which("podman"))
    workstation = {k: v for k, v in os.environ.items()   # CI sets CI=true: a job picks docker
                   if k not in ("CI", "GITLAB_CI", "GITHUB_ACTIONS") and not k.startswith("CI_")}
    environ = {**workstation, **root_podman(job.bed), "LWC_ENGINE": "",
               "PATH": f"{shim}:{os.environ['PATH']}"}
    said = subprocess.run([shim / "docker", "--version"], env=environ, capture_output=True,
                          text=True).stdout
    assert "podman" not in said.lower()  # what the name check alone would have seen
    s = Settings.from_mapping({**job.env(LWC_ENGINE=""), "DOCKER_HOST": ""}, cwd=job.project)
    with local.env(PATH=f"{shim}:{os.environ['PATH']}"):  # where the executor finds docker
        chosen = choose_engine(s, Executor(Masker(), backoff=0), environ)
    assert chosen.engine == "podman"


def test_rootful_podman_removes_a_running_build_container_whose_bash_ignores_sigterm(job):
    """The build's /bin/bash as PID 1 ignores SIGTERM: podman's removal (rm --force --time 0,
    test_podman.py) still removes it while it runs."""
    podman_bed(job.bed)
    name = f"lwc-t{job.token}-running"
    labelled(job, name, str(owner.this_process()), job.bed["LWC_TESTBED_CMS_BASE"],
             "/bin/bash", "-c", "sleep 300; true")
    try:
        state = podman_root(job.bed, "container", "inspect", "--format", "{{.State.Status}}",
                            name)
        assert state.stdout.strip() == "running"
        removed = podman_engine(job).docker.remove(name, check=False)
        assert removed.ok, removed.stderr
        assert podman_root(job.bed, "container", "exists", name).returncode == 1
    finally:
        podman_root(job.bed, "rm", "--force", "--time", "0", name)
