"""Security findings, one test each: what the checkout, the build and the registry cannot make
lwcontainer do, and that no secret leaves the process in any common form. Engine-free; the
end-to-end ones (a link planted by a real build) are in test_security_e2e.py."""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from plumbum import local

from lwcontainer import cli, pipeline
from lwcontainer.ci.github import add_mask_commands
from lwcontainer.config.settings import Settings
from lwcontainer.engines.docker import dockerconfig, owner
from lwcontainer.engines.docker.automounter import Automounter
from lwcontainer.engines.docker.client import DockerCli
from lwcontainer.errors import ConfigError, CvmfsError, EngineError, Interrupted, LoginError
from lwcontainer.executor import TIMED_OUT, Completed, Executor, Step, child_environment
from lwcontainer.output import report
from lwcontainer.output.masking import MASK, Masker

from conftest import lwc
from test_orchestration import Recorder, answers, engine_for, failed, leases, ok
from test_trust import listing

FAKES = Path(__file__).parent / "fakes"
LONG = "github_pat_11AAAAAAA0" + "x" * 60
ESCAPED = "short\\pass\"word'x"


@pytest.fixture
def fake_docker(tmp_path: Path):
    """A fake docker on PATH that records every call (for CLI runs in a subprocess)."""
    calls, plan = tmp_path / "calls.jsonl", tmp_path / "plan.json"
    plan.write_text(json.dumps([{"rc": 0}]))
    env = {"PATH": f"{FAKES}:{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(calls),
           "FAKE_DOCKER_PLAN": str(plan)}
    return env, calls


# -- 1. the checkout's .env -------------------------------------------------------------------
@pytest.mark.parametrize("line", ["LWC_AUTOMOUNTER_OPTIONS=--privileged -v /:/host",
                                  "DOCKER_HOST=tcp://elsewhere:2375",
                                  "LWC_EXTRA_TAGS=${CI_JOB_TOKEN}"])
def test_a_hostile_env_file_is_refused_before_anything_reaches_the_engine(project, fake_docker,
                                                                         line):
    env, calls = fake_docker
    (project / ".env").write_text(f"FROM=r.io/cms/base:1\n{line}\n")
    done = lwc(cwd=project, CI_JOB_TOKEN="tok3n-value", **env)
    assert done.returncode in (2,), done.stderr
    assert not calls.exists(), "nothing may reach the engine"
    assert "tok3n-value" not in done.stdout + done.stderr


@pytest.mark.parametrize("variable", ["LWC_CVMFS_MOUNTS", "LWC_CVMFS_HOST_DIR"])
@pytest.mark.parametrize("path", ["/", "/etc", "/usr/", "/root"])
def test_cvmfs_directories_cannot_be_system_directories(project, variable, path):
    with pytest.raises(ConfigError, match=f"^{variable}: .*system directory"):
        Settings.from_mapping({"FROM": "r.io/x:1", variable: path}, cwd=project)


@pytest.mark.parametrize("variable,value", [
    ("LWC_EXTRA_TAGS", "tag-SECRETVALUE"), ("CI_PROJECT_URL", "https://x/SECRETVALUE"),
    ("TO", "r.io/me/ana:SECRETVALUE"), ("CI_COMMIT_TAG", "v1-SECRETVALUE")])
def test_a_secret_never_becomes_a_tag_label_or_report_value(project, variable, value):
    env = {"FROM": "r.io/x:1", "CI_JOB_TOKEN": "SECRETVALUE", variable: value}
    with pytest.raises(ConfigError, match=f"^{variable}: contains the value of a secret"):
        Settings.from_mapping(env, cwd=project)


def test_the_purge_is_limited_to_where_the_automounter_mounts(project):
    from lwcontainer.engines.docker import commands
    s = Settings.from_mapping({"FROM": "r.io/x:1", "LWC_CVMFS_MOUNTS": "/srv/m"}, cwd=project)
    argv = commands.automounter_run(s, ("/init",))
    assert argv[argv.index(commands.PURGE_THEN_EXEC) + 2] == "/cvmfsmounts/cvmfs"


# -- 2. files the build can touch -------------------------------------------------------------
def test_a_planted_link_at_the_report_is_replaced_not_followed(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    (tmp_path / "lwcontainer.env").symlink_to(target)
    report.Report("r/x:1", "sha256:" + "a" * 64, "", ("r/x:1",), 1).write(
        tmp_path / "lwcontainer.env")
    assert target.read_text() == "precious\n"
    assert not (tmp_path / "lwcontainer.env").is_symlink()
    assert "LWC_IMAGE=r/x:1" in (tmp_path / "lwcontainer.env").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_report_that_cannot_be_written_is_exit_2_and_leaves_no_temporary_file(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "lwcontainer.env").mkdir()  # a directory where the file should go
    with pytest.raises(ConfigError, match="^LWC_REPORT: cannot write"):
        report.write_safely(directory / "lwcontainer.env", "X=1\n")
    assert [p.name for p in directory.iterdir()] == ["lwcontainer.env"]


@pytest.mark.parametrize("key,value", [("LWC_IMAGE_ID", "--privileged"),
                                       ("LWC_BUILD_CONTAINER", "-v/:/host"),
                                       ("LWC_IMAGE_ID", "sha256:zz")])
def test_values_read_back_from_a_report_are_checked_before_they_reach_argv(tmp_path, key, value):
    (tmp_path / "lwcontainer.env").write_text(f"{key}={value}\n")
    with pytest.raises(ConfigError, match=f"^{key}:"):
        report.read(tmp_path / "lwcontainer.env")


# -- 3. secrets in tracebacks and their encodings ----------------------------------------------
def test_an_internal_error_prints_no_form_of_a_secret(project, monkeypatch, capsys):
    def broken(engine, stages, settings, dry_run):
        truncated, escaped = LONG[:20], repr(ESCAPED)  # noqa: F841 - locals a traceback shows
        raise RuntimeError(f"bug near {json.dumps(ESCAPED)} and {LONG}")

    monkeypatch.setattr(pipeline, "whole_job", broken)
    with local.env(FROM="r.io/x:1", CI_JOB_TOKEN=LONG, CI_REGISTRY_PASSWORD=ESCAPED,
                   LWC_LOG_FORMAT="json", HOME=str(project)):
        monkeypatch.chdir(project)
        monkeypatch.setattr(os, "environ", dict(local.env))
        code = cli.main(["--dry-run"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1 and "internal_error" in text
    for form in (LONG, LONG[:20], ESCAPED, json.dumps(ESCAPED)[1:-1], repr(ESCAPED)[1:-1]):
        assert form not in text, form


def test_masking_covers_lines_escapes_urls_and_basic_auth():
    secret = "line-one-secret\nline-two-secret"
    masker = Masker([secret, ESCAPED])
    masker.add_credentials("user", secret)
    pair = base64.b64encode(f"user:{secret}".encode()).decode()
    for text in ("line-two-secret", json.dumps(ESCAPED), repr(ESCAPED), pair,
                 "line%2Done%2Dsecret".replace("%2D", "-") + "%0Aline-two-secret"):
        assert "secret" not in masker(text).replace(MASK, "") or MASK in masker(text), text
    assert masker(json.dumps({"v": ESCAPED})) == json.dumps({"v": "x"}).replace("x", MASK)


def test_github_masks_every_line_escaped_as_the_toolkit_does():
    commands = add_mask_commands("first%line\r\nsecond")
    assert commands == ["::add-mask::first%25line%0D%0Asecond", "::add-mask::first%25line",
                        "::add-mask::second"]
    assert add_mask_commands("plain") == ["::add-mask::plain"]


def test_github_run_prints_add_mask_for_each_line_before_anything_else(project, fake_docker):
    env, _ = fake_docker
    done = lwc("--dry-run", cwd=project, GITHUB_ACTIONS="true", FROM="r.io/x:1",
               CI_REGISTRY_PASSWORD="alpha-part\nbeta-part", **env)
    lines = done.stdout.splitlines()
    assert lines[:3] == ["::add-mask::alpha-part%0Abeta-part", "::add-mask::alpha-part",
                         "::add-mask::beta-part"]
    assert "beta-part" not in "\n".join(lines[3:]) + done.stderr


# -- 5. the automounter by id -----------------------------------------------------------------
def test_a_stopped_automounter_is_replaced_and_ours_stopped_by_id(project):
    inspected = json.dumps([{"Id": "old" + "0" * 61, "State": {"Status": "exited"}}])
    x = Recorder(answers(**{"container_inspect": ok(inspected),
                            "run_--detach": ok("new" + "1" * 61 + "\n")}))
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project),
                               "LWC_CVMFS": "automounter"}, cwd=project)
    engine, _ = engine_for(s, x)
    with Automounter(s, engine.docker):
        pass
    assert x.ran("rm", "--force", "--volumes", "old" + "0" * 61)
    assert not x.ran("rm", "--force", "--volumes", "cvmfs")
    assert x.ran("stop", "--time", "10", "new" + "1" * 61)


def made_by(owner_text: str, status: str = "created") -> Completed:
    return ok(json.dumps([{"Id": "mine" + "2" * 60, "State": {"Status": status},
                           "Config": {"Labels": {"lwcontainer.owner": owner_text}}}]))


class MadeBy(Recorder):
    """The automounter's name: free at first, then the one docker made (by ``owner_text``);
    with ``interrupt``, a signal lands while docker makes it."""

    def __init__(self, owner_text: str, status: str, interrupt: bool) -> None:
        super().__init__(answers(**{"run_--detach": failed(
            "docker: Error response from daemon: failed to create shim task", rc=125)}))
        self.owner_text, self.status, self.interrupt = owner_text, status, interrupt
        self.looks = 0

    def live_leases(self) -> list[str]:
        made = [a[a.index("--name") + 1] for a in leases(self)]
        return [name for name in made if not self.ran("rm", "--force", "--volumes", name)]

    def run(self, step: Step) -> Completed:
        if step.argv[:2] == ("container", "inspect"):
            self.calls.append((step.argv, "MainThread"))
            self.looks += 1
            return (failed("Error: No such container: cvmfs") if self.looks == 1
                    else made_by(self.owner_text, self.status))
        if step.argv[:1] == ("ps",):  # the run's own lease, while it exists, is a live build
            super().run(step)
            return ok(listing(*[(name, "created", str(owner.this_process()), "")
                                for name in self.live_leases()]))
        done = super().run(step)
        if self.interrupt and step.argv[:2] == ("run", "--detach"):
            raise Interrupted("SIGTERM")
        return done


@pytest.mark.parametrize("how, status", [("failed start", "created"), ("signal", "created"),
                                         ("signal", "running")])
def test_the_automounter_this_run_made_is_let_go_its_own_only(project, how, status):
    """A start that fails, or a signal while docker makes it: the automounter carrying this
    run's owner label is removed (never started: even with LWC_KEEP_AUTOMOUNTER, it is of use
    to nobody) or released (running: stopped, as no other build uses it); one another run
    made is left alone."""
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project),
                               "LWC_CVMFS": "automounter",
                               "LWC_KEEP_AUTOMOUNTER": "1" if status == "created" else ""},
                              cwd=project)
    for made, let_go in ((str(owner.this_process()), True), ("otherhost/1/2", False)):
        x = MadeBy(made, status, interrupt=how == "signal")
        engine, _ = engine_for(s, x)
        with pytest.raises(CvmfsError if how == "failed start" else Interrupted):
            with Automounter(s, engine.docker):
                pass
        assert bool(x.ran("rm", "--force", "--volumes", "mine" + "2" * 60)) is let_go
        assert bool(x.ran("stop")) is (let_go and status == "running")
        leases = [argv[argv.index("--name") + 1] for argv in x.ran("create")]
        assert len(leases) == 1 and x.ran("rm", "--force", "--volumes", leases[0])  # always


# -- 6. no unbounded docker call ----------------------------------------------------------------
def test_a_hanging_docker_call_is_stopped_at_its_limit(tmp_path):
    calls, plan = tmp_path / "calls.jsonl", tmp_path / "plan.json"
    plan.write_text(json.dumps([{"rc": 0, "sleep": 30}]))
    with local.env(PATH=f"{FAKES}:{local.env['PATH']}", FAKE_DOCKER_LOG=str(calls),
                   FAKE_DOCKER_PLAN=str(plan)):
        x = Executor(Masker(), backoff=0)
        started = time.monotonic()
        done = x.run(Step(("version",), program="docker",
                          env=child_environment(local.env.getdict()), timeout=1,
                          timeout_setting="LWC_DOCKER_TIMEOUT", check=False, what="docker version"))
    assert time.monotonic() - started < 8
    assert done.returncode == TIMED_OUT and "LWC_DOCKER_TIMEOUT" in done.stderr


def test_every_docker_call_gets_a_limit_and_only_the_build_may_have_none(project):
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project)}, cwd=project)
    engine, _ = engine_for(s, Recorder({}))
    docker: DockerCli = engine.docker
    assert docker.step(("version",)).timeout == 60
    assert docker.step(("push", "r/x:1")).timeout == 1800
    assert docker.step(("inspect", "x")).timeout == 60
    assert docker.step(("start", "--attach", "b")).timeout is None
    assert docker.step(("run", "--detach", "--name", "cvmfs", "img")).timeout == 60
    limited = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project),
                                     "LWC_BUILD_TIMEOUT": "5"}, cwd=project)
    assert engine_for(limited, Recorder({}))[0].docker.step(("start", "--attach", "b")).timeout == 5


def test_retry_backoff_is_capped(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    x = Executor(Masker(), backoff=1.0)
    monkeypatch.setattr(x, "_run_once", lambda step: Completed(1, "", "503 unavailable"))
    x.run(Step(("push", "r/x:1"), program="docker", retries=20, check=False))
    assert len(waits) == 20 and max(waits) == 30


# -- 8. a signal while a container is being created ---------------------------------------------
def test_a_signal_during_the_build_containers_create_still_removes_it(project):
    class Interrupting(Recorder):
        def run(self, step: Step) -> Completed:
            if step.argv[:1] == ("create",) and "lwcontainer.role=build" in step.argv \
                    and "cvmfs-lease" not in " ".join(step.argv):
                self.calls.append((step.argv, "MainThread"))
                raise Interrupted("SIGTERM")
            return super().run(step)

    x = Interrupting(answers())
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project), "LWC_CVMFS": "none"},
                              cwd=project)
    engine, stages = engine_for(s, x)
    with pytest.raises(Interrupted):
        pipeline.whole_job(engine, stages, s, dry_run=False)
    created = [argv[2] for argv in x.ran("create", "--name")]
    removed = [argv[-1] for argv in x.ran("rm", "--force")]
    assert created and all(name in removed for name in created)


# -- 9. SIGKILL ---------------------------------------------------------------------------------
def test_children_are_tied_to_lwcontainer_and_a_killed_runs_config_is_removed(tmp_path):
    argv = Executor.argv(Step(("version",), program="docker"))
    assert argv[1:4] == ["--pdeathsig", "KILL", "--"], "setpriv ties each child to its parent"
    dead = tmp_path / f"{dockerconfig.PREFIX}999999999-abc"  # no such pid
    alive = tmp_path / f"{dockerconfig.PREFIX}{os.getpid()}-abc"
    for directory in (dead, alive):
        directory.mkdir()
        (directory / "config.json").write_text('{"auths": {"r.io": {"auth": "x"}}}')
    dockerconfig.remove_stale(tmp_path)
    assert not dead.exists() and alive.exists()


def test_the_private_config_holds_no_credentials_of_the_user(tmp_path, project):
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {"docker.io": {"auth": "dXNlcjpwdw=="}}, "credsStore": "pass",
         "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
         "currentContext": "remote"}))
    meta = home / ".docker" / "contexts" / "meta" / "0123abcd" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"Name": "remote"}')
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(home), "CI_REGISTRY": "r.io",
                               "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "t0ken"}, cwd=project)
    path = dockerconfig.private_path(s)
    with dockerconfig.private_config(s, path, dry_run=False):
        config = json.loads((path / "config.json").read_text())
        assert config == {"credsStore": "",
                          "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
                          "currentContext": "remote"}
        assert oct((path / "config.json").stat().st_mode & 0o777) == "0o600"
        # the user's contexts (where each one's engine is), reached, not copied
        assert (path / "contexts").resolve() == (home / ".docker" / "contexts").resolve()
        assert (path / "contexts" / "meta" / "0123abcd" / "meta.json").read_text() == \
            '{"Name": "remote"}'
    assert not path.exists()
    assert meta.read_text() == '{"Name": "remote"}'  # removing the private config left them


# -- 10. the low ones -----------------------------------------------------------------------
def test_a_project_directory_with_a_colon_is_exit_2(tmp_path):
    odd = tmp_path / "a:b"
    (odd / ".gitlab").mkdir(parents=True)
    (odd / ".gitlab" / "build.sh").write_text("true\n")
    with pytest.raises(ConfigError, match="^LWC_PROJECT_DIR: .*':'"):
        Settings.from_mapping({"FROM": "r.io/x:1"}, cwd=odd)


def test_a_registry_that_cannot_be_resolved_at_login_is_exit_3_not_4(project):
    x = Recorder(answers(login=failed("Error response from daemon: Get \"https://nope.invalid"
                                      "/v2/\": dial tcp: lookup nope.invalid: no such host")))
    s = Settings.from_mapping({"FROM": "r.io/x:1", "HOME": str(project), "CI_REGISTRY": "r.io",
                               "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "t0ken",
                               "LWC_CVMFS": "none"}, cwd=project)
    engine, _ = engine_for(s, x)
    with pytest.raises(EngineError, match="could not be reached"):
        engine.login()
    refused = Recorder(answers(login=failed("Error response from daemon: unauthorized")))
    with pytest.raises(LoginError):
        engine_for(s, refused)[0].login()


def test_dry_run_escapes_control_characters(project, fake_docker):
    env, _ = fake_docker
    done = lwc("--dry-run", cwd=project, FROM="r.io/x:1", CI_PROJECT_URL="https://x/\x1b[2Jy",
               **env)
    assert "\x1b" not in done.stdout
    assert "\\x1b" in done.stdout or "\\u001b" in done.stdout


def test_github_add_mask_skips_lines_the_masker_would_not_mask_alone():
    """A line '}' of a JSON key would make GitHub mask every '}' in the log."""
    commands = add_mask_commands('{\n  "key": "long-secret-value"\n}')
    assert commands == ["::add-mask::{%0A  \"key\": \"long-secret-value\"%0A}",
                        "::add-mask::  \"key\": \"long-secret-value\""]
    assert not any(c in ("::add-mask::{", "::add-mask::}") for c in commands)
