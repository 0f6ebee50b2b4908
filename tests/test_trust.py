"""Issue 17, checkout trust and the smaller findings: one test each, engine-free. What the
checkout, its .env, the build and a committed report cannot make lwcontainer do, and which
variables are the job's secrets everywhere. The real-engine ones are in test_trust_e2e.py."""
from __future__ import annotations

import io
import json
import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from plumbum import local

from lwcontainer import cli, pipeline
from lwcontainer.config import git
from lwcontainer.config.settings import SPEC_BY_NAME, Settings
from lwcontainer.config.sources import gather
from lwcontainer.engines.docker.buildcontainer import BuildContainer
from lwcontainer.engines.cli import EngineCli
from lwcontainer.engines.docker.client import DockerCli
from lwcontainer.engines.choice import choose_engine
from lwcontainer.engines.docker import probe as docker_probe
from lwcontainer.engines.docker.engine import DockerEngine
from lwcontainer.engines.inplace.artifact import LAYER_FILE
from lwcontainer.engines.inplace.engine import InplaceEngine
from lwcontainer.errors import ConfigError
from lwcontainer.executor import Completed, Executor, Step
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Stages

from test_orchestration import Recorder, answers

DOCKER = EngineCli("docker", "Docker engine")

TOKEN = "glcbt-64_job-token-value-0123"
#: The job's secrets under names that do not say so, and the user's own.
INNOCENT = {
    "CI_REPOSITORY_URL": f"https://gitlab-ci-token:{TOKEN}@gitlab.example.org/me/ana.git",
    "DOCKER_AUTH_CONFIG": json.dumps({"auths": {"r.example.org": {
        "auth": "dXNlcjpkb2NrZXItYXV0aC1wYXNzd29yZA=="}}}),  # user:docker-auth-password
    "CI_JOB_JWT_V2": "eyJhbGciOiJSUzI1NiJ9.jwt-payload.jwt-signature",
    "EOS_KEYTAB": "keytab-bytes-of-the-user",
}


def secret_env(**more: str) -> dict[str, str]:
    return {"CI_JOB_TOKEN": TOKEN, **INNOCENT, "LWC_SECRET_VARIABLES": "EOS_KEYTAB", **more}


# -- M6: the job's secret variables, one list, everywhere --------------------------------------
def test_m6_every_secret_variable_is_masked_in_what_lwcontainer_prints(project, monkeypatch,
                                                                      capsys):
    values = [*INNOCENT.values(), "docker-auth-password", "dXNlcjpkb2NrZXItYXV0aC1wYXNzd29yZA=="]

    def broken(engine, stages, settings, dry_run):
        raise RuntimeError("bug near " + " and ".join(values))

    monkeypatch.setattr(pipeline, "whole_job", broken)
    with local.env(FROM="r.io/x:1", LWC_LOG_FORMAT="json", HOME=str(project), **secret_env()):
        monkeypatch.chdir(project)
        monkeypatch.setattr(os, "environ", dict(local.env))
        code = cli.main(["--dry-run"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1 and "internal_error" in text
    for value in values:
        assert value not in text, value


def test_m6_no_secret_variable_reaches_a_child(project):
    environ = {"PATH": "/usr/bin", "HOME": str(project), "KEEP_ME": "1", **secret_env()}
    s = Settings.from_mapping({"FROM": "r.io/x:1", **environ}, cwd=project)
    docker = DockerEngine(s, Recorder({}), Stages(s, Masker(), io.StringIO()), environ,
                          local_socket=Path("/nonexistent"))
    inplace = InplaceEngine(s, Executor(Masker()), Stages(s, Masker(), io.StringIO()), environ)
    for env in (docker.docker.env, docker.user_docker.env, inplace.env):
        assert env["KEEP_ME"] == "1"
        leaked = sorted(set(secret_env()) - {"LWC_SECRET_VARIABLES"} & set(env))
        assert leaked == []


class StepEnvs(Recorder):
    """Records each step's environment too."""

    def __init__(self, answers) -> None:
        super().__init__(answers)
        self.envs: list[dict[str, str]] = []

    def run(self, step: Step) -> Completed:
        self.envs.append(dict(step.env))
        return super().run(step)


def recording_git(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose ``git`` and ``docker`` write their environment to a log (git fails)."""
    folder, log = tmp_path / "bin", tmp_path / "envs.log"
    folder.mkdir()
    (folder / "git").write_text(f"#!/bin/sh\nenv >> {log}\nexit 1\n")
    (folder / "docker").write_text("#!/bin/sh\nexit 0\n")
    for program in ("git", "docker"):
        (folder / program).chmod(0o755)
    return f"{folder}:/usr/bin:/bin", log


def test_m6_a_secret_named_only_by_switch_or_env_file_reaches_no_git(project, tmp_path):
    """LWC_SECRET_VARIABLES given as a switch or in an --env-file, not in the environment:
    git (the commit's defaults, the layer's choice of engine) still goes without the variable."""
    path, log = recording_git(tmp_path)
    environ = {"PATH": path, "HOME": str(project), "GRID_USERKEY": "grid-key-of-the-user"}
    gather(environ, {"LWC_SECRET_VARIABLES": "GRID_USERKEY"}, cwd=project)
    (tmp_path / "run.env").write_text("LWC_SECRET_VARIABLES=GRID_USERKEY\n")
    gather(environ, {}, env_file=str(tmp_path / "run.env"), cwd=project)
    s = Settings.from_mapping({"FROM": "r.io/x:1", **environ,
                               "LWC_SECRET_VARIABLES": "GRID_USERKEY"}, cwd=project)
    (project / LAYER_FILE).write_bytes(b"layer")
    assert choose_engine(s, Recorder({}), environ, publishes=True).engine == "inplace"
    calls = log.read_text().count("HOME=")  # a rev-parse each (it fails: asks no more), ls-files
    assert calls == 3 and "GRID_USERKEY" not in log.read_text()


def test_m6_a_secret_named_only_by_switch_reaches_no_docker_probe(project, tmp_path):
    """The same for 'docker version' and 'docker --version', which ask whether docker answers."""
    path, _ = recording_git(tmp_path)
    environ = {"PATH": path, "HOME": str(project), "GRID_USERKEY": "grid-key-of-the-user"}
    s = Settings.from_mapping({"FROM": "r.io/x:1", **environ,
                               "LWC_SECRET_VARIABLES": "GRID_USERKEY"}, cwd=project)
    x = StepEnvs({("--version",): Completed(0, "Docker version 28.0.1\n", ""),
                  ("version",): Completed(0, "28.0.1\n", "")})
    assert docker_probe.probe(s, x, environ).what == docker_probe.ANSWERS
    assert len(x.envs) == 2 and all(env["HOME"] == str(project) and "GRID_USERKEY" not in env
                                    for env in x.envs)


@pytest.mark.parametrize("name", ["CI_REPOSITORY_URL", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT_V2",
                                  "EOS_KEYTAB"])
def test_m6_build_env_refuses_secrets_under_innocent_names(project, name):
    with pytest.raises(ConfigError, match=f"^LWC_BUILD_ENV: {name} holds a secret"):
        Settings.from_mapping({"FROM": "r.io/x:1", **secret_env(), "LWC_BUILD_ENV": name},
                              cwd=project)


def test_m6_build_env_refuses_a_variable_whose_value_contains_a_secret(project):
    env = secret_env(GIT_REMOTE=f"https://me:{TOKEN}@git.example.org/x.git",
                     LWC_BUILD_ENV="GIT_REMOTE")
    with pytest.raises(ConfigError, match="^LWC_BUILD_ENV: GIT_REMOTE contains the value of "
                                          "CI_JOB_TOKEN"):
        Settings.from_mapping({"FROM": "r.io/x:1", **env}, cwd=project)


def test_m6_a_users_secret_never_becomes_a_tag(project):
    env = secret_env(TO="r.io/me/ana:keytab-bytes-of-the-user")
    with pytest.raises(ConfigError, match="^TO: contains the value of a secret"):
        Settings.from_mapping({"FROM": "r.io/x:1", **env}, cwd=project)


def test_m6_secret_variables_is_a_setting_the_checkout_cannot_set(project):
    spec = SPEC_BY_NAME["LWC_SECRET_VARIABLES"]
    assert not spec.dotenv and not spec.secret
    (project / ".env").write_text("FROM=r.io/x:1\nLWC_SECRET_VARIABLES=\n")
    from conftest import lwc
    done = lwc("--dry-run", cwd=project)
    assert done.returncode == 2 and "LWC_SECRET_VARIABLES" in done.stderr
    with pytest.raises(ConfigError, match="^LWC_SECRET_VARIABLES: 'A-B' is not a variable name"):
        Settings.from_mapping({"FROM": "r.io/x:1", "LWC_SECRET_VARIABLES": "OK_NAME A-B"},
                              cwd=project)


# -- M7: the checkout's .git is untrusted ------------------------------------------------------
def git_repository(path: Path, owner: int | None = None) -> str:
    """A one-commit repository at ``path`` with a monitor planted in its config (as a build or
    an earlier job could); returns HEAD."""
    path.mkdir(parents=True, exist_ok=True)
    quiet = dict(check=True, capture_output=True, text=True)
    subprocess.run(["git", "init", "-q", str(path)], **quiet)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@x",
                    "commit", "-q", "--allow-empty", "-m", "one"], **quiet)
    sha = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], **quiet).stdout.strip()
    with open(path / ".git" / "config", "a") as config:
        config.write(f"[core]\n\tfsmonitor = touch {path}.monitor-ran #\n"
                     f"\thooksPath = {path}/.githooks\n")
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(path)], check=True)
    return sha


def test_m7_lwcontainers_git_needs_no_safe_directory_and_runs_nothing_of_the_checkout(tmp_path):
    project = tmp_path / "ana"
    sha = git_repository(project, owner=1000)  # the runner's user, not ours
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    raw = gather(environ, {}, cwd=project)
    assert raw["CI_COMMIT_SHA"] == sha and raw["CI_COMMIT_SHORT_SHA"] == sha[:8]
    assert not Path(f"{project}.monitor-ran").exists()
    # The planted monitor is real: an ordinary 'git status' runs it; lwcontainer's git does not.
    rc, _ = git.run(project, environ, "status")
    assert rc == 0 and not Path(f"{project}.monitor-ran").exists()
    subprocess.run(["git", "-c", "safe.directory=*", "-C", str(project), "status"],
                   capture_output=True)
    assert Path(f"{project}.monitor-ran").exists()


def test_m7_the_build_container_gets_git_read_only(project):
    s = Settings.from_mapping({"FROM": "r.io/x:1"}, cwd=project)
    (project / ".git").mkdir()
    argv = BuildContainer(s, DockerCli(Recorder({}), DOCKER, {})).create_argv()
    p = str(s.project_dir)
    assert argv[argv.index(f"{p}:{p}") + 1:][:2] == ("-v", f"{p}/.git:{p}/.git:ro")
    (project / ".git").rmdir()
    assert f"{p}/.git:{p}/.git:ro" not in BuildContainer(s, DockerCli(Recorder({}), DOCKER, {})) \
        .create_argv()
    (project / ".git").symlink_to("/etc")  # never mounts a host directory the checkout names
    with pytest.raises(ConfigError, match="^LWC_PROJECT_DIR: .*\\.git is a symbolic link"):
        BuildContainer(s, DockerCli(Recorder({}), DOCKER, {})).create_argv()


# -- orphans after SIGKILL -----------------------------------------------------------------------
def test_orphans_an_owner_is_a_process_on_this_host_and_its_start_time(project):
    from lwcontainer.engines.docker import owner
    me = owner.this_process()
    assert owner.Owner.parse(str(me)) == me and me.alive()
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert not owner.Owner(me.host, finished.pid, me.start).alive()  # gone
    assert not owner.Owner(me.host, me.pid, str(int(me.start) + 1)).alive()  # pid reused
    assert owner.Owner("another-runner", finished.pid, "1").alive()  # not ours to judge
    assert owner.Owner.parse("no-owner") is None


def listing(*rows: tuple[str, str, str, str]) -> str:
    """docker ps lines: ID, name, state, owner label, keep label."""
    return "".join("\t".join((row[0], f"lwc-{row[0]}", *row[1:])) + "\n" for row in rows)


def test_orphans_build_and_lease_containers_carry_their_owner(project):
    from lwcontainer.engines.docker import owner
    from lwcontainer.engines.docker.automounter import Automounter
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project)}, cwd=project)
    label = f"lwcontainer.owner={owner.this_process()}"
    argv = BuildContainer(s, DockerCli(Recorder({}), DOCKER, {})).create_argv()
    assert label in argv and "lwcontainer.keep=1" not in argv
    assert "lwcontainer.keep=1" in BuildContainer(s, DockerCli(Recorder({}), DOCKER, {}),
                                                  keep=True).create_argv()
    x = Recorder(answers())
    with Automounter(s, DockerCli(x, DOCKER, {})) as mounter:
        running: Future[None] = Future()
        with ThreadPoolExecutor(1) as pool:
            with mounter.lease(pool, running):
                lease = x.ran("create")[0]
                name = lease[lease.index("--name") + 1]
                assert label in lease
            assert name not in (argv[-1] for argv in x.ran("rm"))  # until the build runs
            running.set_result(None)
        assert name in (argv[-1] for argv in x.ran("rm"))  # then, before the release


def test_orphans_are_removed_and_the_automounter_counts_only_live_builds(project):
    from lwcontainer.engines.docker import owner
    from lwcontainer.engines.docker.automounter import Automounter
    me = owner.this_process()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = f"{me.host}/{dead.pid}/{me.start}"
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project)}, cwd=project)
    rows = [("orphan1", "running", gone, ""), ("orphan2", "created", gone, ""),
            ("kept-done", "exited", gone, "1"), ("kept-killed", "running", gone, "1")]
    x = Recorder({("ps",): Completed(0, listing(*rows), "")})
    mounter = Automounter(s, DockerCli(x, DOCKER, {}))
    mounter.started, mounter.id = True, "a" * 64
    mounter.release()
    removed = [argv[-1] for argv in x.ran("rm")]
    assert removed[:3] == ["orphan1", "orphan2", "kept-killed"]
    assert x.ran("stop", "--time", "10", "a" * 64), "orphans do not keep the automounter"
    live = [("other-run", "running", str(me), ""), ("elsewhere", "created", "runner-b/1/1", "")]
    x = Recorder({("ps",): Completed(0, listing(*rows[:1], *live), "")})
    mounter = Automounter(s, DockerCli(x, DOCKER, {}))
    mounter.started, mounter.id = True, "a" * 64
    mounter.release()
    assert [argv[-1] for argv in x.ran("rm")] == ["orphan1"] and not x.ran("stop")


# -- M4: the checkout cannot choose where to push ----------------------------------------------
CI = {"CI_REGISTRY": "r.example.org", "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": TOKEN,
      "CI_REGISTRY_IMAGE": "r.example.org/me/ana"}


@pytest.mark.parametrize("to,environ", [
    ("r.example.org/victim-group/production:latest", CI),
    ("r.example.org/me/ana-evil:v1", CI),  # a name that merely starts like it
    ("other.example.org/me/ana:v1", CI),
    ("victim-group/production:latest", CI),  # Docker Hub
    ("r.example.org/me/ana:v1", {}),  # outside CI: no registry host at all
    ("victim-group/production:latest", {"CI_REGISTRY": "r.example.org", "CI_REGISTRY_USER": "u",
                                        "CI_JOB_TOKEN": TOKEN}),  # pushed to Docker Hub
    ("myanalysis:v2", {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Me/Ana",
                       "GITHUB_TOKEN": TOKEN}),  # GitHub: CI_REGISTRY_IMAGE is ghcr.io/me/ana
    # outside CI, a local name of the user's own: the commit would move it onto the build
    ("python:3.12-slim", {}),
    ("cmssw/el9:x86_64", {}),  # a base image of the user's
    ("lwcontainer-evil/x:1", {}),  # a name that merely starts like it
])
def test_m4_the_checkouts_env_cannot_choose_where_to_push(project, to, environ):
    (project / ".env").write_text(f"FROM=r.io/x:1\nTO={to}\n")
    with pytest.raises(ConfigError, match="^TO: .*CI_REGISTRY_IMAGE"):
        gather({"PATH": os.environ["PATH"], **environ}, {}, cwd=project)


@pytest.mark.parametrize("to,environ", [
    ("r.example.org/me/ana:v2", CI),
    ("r.example.org/me/ana/cc7:v2", CI),
    ("lwcontainer/myanalysis:v2", {}),
    ("lwcontainer/ana:v2", {"CI_REGISTRY": "r.example.org", "LWC_PUSH": "never"}),
    ("ghcr.io/me/ana:v2", {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Me/Ana",
                           "GITHUB_TOKEN": TOKEN}),
])
def test_m4_the_checkouts_env_may_name_its_own_repository_or_a_local_image(project, to, environ):
    (project / ".env").write_text(f"FROM=r.io/x:1\nTO={to}\n")
    assert gather({"PATH": os.environ["PATH"], **environ}, {}, cwd=project)["TO"] == to
    # What the user sets wins and is the user's to choose.
    (project / ".env").write_text("FROM=r.io/x:1\nTO=r.example.org/victim/prod:1\n")
    raw = gather({"PATH": os.environ["PATH"], **CI, "TO": "r.example.org/other/x:1"}, {},
                 cwd=project)
    assert raw["TO"] == "r.example.org/other/x:1"


# -- M5: the report is output, not input ---------------------------------------------------------
def test_m5_run_takes_only_the_image_from_the_report(project, tmp_path):
    from conftest import lwc
    planted = tmp_path / "host-dir"
    (planted / "cms.cern.ch").mkdir(parents=True)  # looks like a CVMFS: the old check passed
    image_id = "sha256:" + "e" * 64
    (project / "lwcontainer.env").write_text(f"LWC_IMAGE_ID={image_id}\nLWC_CVMFS_SOURCE=host\n"
                                             f"LWC_CVMFS_HOST_DIR={planted}\n")
    done = lwc("run", "--dry-run", "--", "ls", "/cvmfs", cwd=project)
    assert done.returncode == 0, done.stderr
    runs = [line for line in done.stdout.splitlines() if line.startswith("docker run --rm")]
    assert runs and image_id in runs[-1]
    assert str(planted) not in done.stdout
    # A value the report may hold but run no longer reads is no reason to fail.
    (project / "lwcontainer.env").write_text(f"LWC_IMAGE_ID={image_id}\n"
                                             "LWC_CVMFS_HOST_DIR=not a path\n")
    assert lwc("run", "--dry-run", cwd=project, LWC_CVMFS="none").returncode == 0


# -- L5: messages are masked before they are cut -----------------------------------------------
SECRET22 = "glpat-AbCdEfGhIjKlMnOp"


def test_l5_a_cut_error_message_shows_no_part_of_a_secret(tmp_path):
    from lwcontainer.errors import LwcError
    from lwcontainer.executor import Step
    fakes = Path(__file__).parent / "fakes"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"rc": 1, "stderr": f"{SECRET22} " + "x" * 592 + "\n"}]))
    with local.env(PATH=f"{fakes}:{local.env['PATH']}", FAKE_DOCKER_LOG=str(tmp_path / "log"),
                   FAKE_DOCKER_PLAN=str(plan)):
        x = Executor(Masker([SECRET22]), backoff=0)
        with pytest.raises(LwcError) as failed:
            x.run(Step(("version",), program="docker", env=dict(local.env),
                       what="docker version"))
    message = str(failed.value)
    assert message.endswith("x" * 400)  # the tail of docker's message, the part that was cut
    assert not any(SECRET22[i:] in message for i in range(len(SECRET22) - 3))


def test_l5_the_masker_hides_what_is_left_of_a_secret_at_a_cut():
    masker = Masker([SECRET22])
    assert masker(f"…{SECRET22[7:]} rest") == "…***** rest"
    assert masker(f"start {SECRET22[:15]}…") == "start *****…"
    assert masker("…tail of something else") == "…tail of something else"


# -- L8: CI_REGISTRY is a host[:port] ------------------------------------------------------------
@pytest.mark.parametrize("value", ["-h", "--password=x", "-.example.org", "r..example.org",
                                   "r.example.org:", "r.example.org:port", "[::1"])
@pytest.mark.parametrize("variable", ["CI_REGISTRY", "LWC_INSECURE_REGISTRIES"])
def test_l8_a_registry_is_a_host_and_port_never_an_option(project, variable, value):
    env = {"FROM": "r.io/x:1", "CI_REGISTRY": "r.example.org", "CI_REGISTRY_USER": "u",
           "CI_JOB_TOKEN": TOKEN, variable: value}
    with pytest.raises(ConfigError, match=f"^{variable}: .*host\\[:port\\]"):
        Settings.from_mapping(env, cwd=project)


@pytest.mark.parametrize("value", ["r.example.org", "127.0.0.1:5055", "localhost:5000",
                                   "[::1]:5000", "gitlab-registry.cern.ch"])
def test_l8_registry_hosts_as_they_are_written(project, value):
    env = {"FROM": "r.io/x:1", "CI_REGISTRY": value, "CI_REGISTRY_USER": "u",
           "CI_JOB_TOKEN": TOKEN, "LWC_INSECURE_REGISTRIES": f"{value}, other.org:81"}
    s = Settings.from_mapping(env, cwd=project)
    assert s.registry == value and s.insecure_registries == (value, "other.org:81")


# -- L6: init never writes through a link ------------------------------------------------------
def test_l6_init_never_writes_through_a_link(tmp_path):
    from test_scaffold import init
    project, outside = tmp_path / "ana", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / ".gitlab-ci.yml").symlink_to(outside / "planted.yml")  # dangling
    done = init(project)
    assert done.returncode == 2 and ".gitlab-ci.yml" in done.stderr
    assert list(outside.iterdir()) == []
    victim = outside / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (project / ".gitlab").mkdir()
    (project / ".gitlab" / "build.sh").symlink_to(victim)
    done = init(project, "--force")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n" and victim.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    for name in (".gitlab-ci.yml", ".gitlab/build.sh"):
        assert (project / name).is_file() and not (project / name).is_symlink()
    assert (project / ".gitlab" / "build.sh").stat().st_mode & 0o777 == 0o755


def test_l6_init_refuses_a_linked_directory(tmp_path):
    from test_scaffold import init
    project, outside = tmp_path / "ana", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / ".gitlab").symlink_to(outside)
    done = init(project, "--force")
    assert done.returncode == 2 and "symbolic link" in done.stderr
    assert list(outside.iterdir()) == []


# -- L7: the report's directories ----------------------------------------------------------------
def test_l7_the_report_is_never_written_through_a_linked_directory(tmp_path):
    from lwcontainer.output import report
    project, outside = tmp_path / "ana", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "out").symlink_to(outside)
    result = report.Report("r/x:1", "sha256:" + "a" * 64, "", ("r/x:1",), 1)
    with pytest.raises(ConfigError, match="^LWC_REPORT: .*out is a symbolic link"):
        result.write(project / "out" / "x.env", project)
    assert list(outside.iterdir()) == []
    result.write(project / "deeper" / "x.env", project)  # directories are made, not followed
    assert "LWC_IMAGE=r/x:1" in (project / "deeper" / "x.env").read_text()


@pytest.mark.parametrize("value", ["/tmp/elsewhere.env", "../x.env"])
def test_l7_the_report_lies_inside_the_project(project, value):
    with pytest.raises(ConfigError, match="^LWC_REPORT: .*inside the project directory"):
        Settings.from_mapping({"FROM": "r.io/x:1", "LWC_REPORT": value}, cwd=project)


def test_m6_the_single_job_capture_gets_the_secrets_it_searches_the_layer_for(project):
    """The capture runs the build with env -i (only LWC_BUILD_ENV names), and searches the
    layer for the job's secrets: it alone gets their values, as CI gives them to a capture job."""
    environ = {"PATH": "/usr/bin", "HOME": str(project), **secret_env()}
    s = Settings.from_mapping({"FROM": "r.io/x:1", **environ, "LWC_SECRET_VARIABLES": "EOS_KEYTAB",
                               "LWC_ENGINE": "inplace"}, cwd=project)
    environ.pop("LWC_SECRET_VARIABLES")  # given as a switch, not in the environment
    inplace = InplaceEngine(s, Executor(Masker()), Stages(s, Masker(), io.StringIO()), environ)
    env = inplace.capture_step().env
    assert env["LWC_SECRET_VARIABLES"] == "EOS_KEYTAB"
    for name in ("CI_JOB_TOKEN", *INNOCENT):
        assert env[name] == secret_env()[name]
