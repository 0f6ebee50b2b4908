"""The engine seam, the podman engine's plan and the automatic engine choice, without an engine:
argv values, dry runs and a recording fake executor. tests/test_podman_e2e.py proves the same on
the real test bed (rootless and rootful podman, the real choice)."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from conftest import lwc
from lwcontainer.config.settings import Settings
from lwcontainer.engines import IMPLEMENTATIONS, make_engine
from lwcontainer.engines.choice import choose_engine, untracked_layer
from lwcontainer.engines.inplace.artifact import LAYER_FILE
from lwcontainer.engines.podman import commands as podman
from lwcontainer.errors import ConfigError, EngineError, ExitCode
from lwcontainer.executor import DryRunExecutor
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Stages

from test_orchestration import Recorder, failed, ok

PACKAGE = Path(__file__).resolve().parent.parent / "lwcontainer"


def settings_for(project: Path, **env: str) -> Settings:
    return Settings.from_mapping({"FROM": "r.io/cms/base:1", "HOME": str(project), **env},
                                 cwd=project)


# -- the podman plan ---------------------------------------------------------------------------
def dry_run(project: Path, **env: str) -> list[str]:
    done = lwc("--dry-run", cwd=project, **{"FROM": "lwc/base:1", "LWC_ENGINE": "podman",
                                            "LWC_CVMFS": "none", "CI_REGISTRY": "127.0.0.1:5055",
                                            "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "hunter2",
                                            **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_dry_run_with_podman_shows_podman_command_lines_only(project):
    lines = dry_run(project, CI_REGISTRY_IMAGE="127.0.0.1:5055/me/ana", LWC_EXTRA_TAGS="v1")
    assert lines and all(line.startswith("podman ") for line in lines), lines
    text = "\n".join(lines)
    assert "docker" not in text.replace("--format docker", "").replace("docker.io/", "")
    assert "hunter2" not in text
    login = next(line for line in lines if line.startswith("podman login"))
    assert "--authfile /tmp/lwc-podman-auth-" in login and "--tls-verify=false" in login
    assert login.endswith("--password-stdin 127.0.0.1:5055 <<< (password on stdin)")
    # FROM pulled by its fully qualified name; its registry (docker.io) keeps TLS
    pull = next(line for line in lines if line.startswith("podman pull"))
    assert pull.endswith(" docker.io/lwc/base:1") and "--tls-verify" not in pull
    create = next(line for line in lines if line.startswith("podman create"))
    assert "--unsetenv TERM --unsetenv container" in create
    assert next(line for line in lines if line.startswith("podman commit")).startswith(
        "podman commit --format docker ")
    pushes = [line for line in lines if line.startswith("podman push")]
    assert len(pushes) == 2 and all("--tls-verify=false" in p for p in pushes)
    assert "--digestfile" in pushes[0], "TO's digest, from podman itself"
    assert "--digestfile" not in pushes[1]


def test_podman_keeps_tls_for_other_registries_unless_listed(project):
    lines = dry_run(project, CI_REGISTRY="registry.example:5000",
                    CI_REGISTRY_IMAGE="registry.example:5000/me/ana")
    assert not any("--tls-verify" in line for line in lines)
    listed = dry_run(project, CI_REGISTRY="registry.example:5000",
                     CI_REGISTRY_IMAGE="registry.example:5000/me/ana",
                     LWC_INSECURE_REGISTRIES="registry.example:5000")
    assert all("--tls-verify=false" in line for line in listed
               if line.startswith(("podman login", "podman push")))


def test_podman_plans_references_that_name_no_registry(project):
    """foo_bar.com/x is a path with no registry (docker's reading, not a host): TLS is kept for
    its pull and push, and the plan is shown (it crashed reading the missing host)."""
    lines = dry_run(project, FROM="foo_bar.com/x:1", TO="foo_bar.com/y:2")
    pull = next(line for line in lines if line.startswith("podman pull"))
    assert pull.endswith(" foo_bar.com/x:1") and "--tls-verify" not in pull
    push = next(line for line in lines if line.startswith("podman push"))
    assert push.endswith(" foo_bar.com/y:2") and "--tls-verify" not in push


def test_podman_login_only_and_keep_login_use_the_users_auth_file(project):
    lines = dry_run(project, LWC_KEEP_LOGIN="1")
    assert not any("--authfile" in line for line in lines)
    done = lwc("login", "--dry-run", cwd=project, LWC_ENGINE="podman", CI_REGISTRY="r.io",
               CI_REGISTRY_USER="u", CI_JOB_TOKEN="hunter2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == \
        "podman login --username u --password-stdin r.io <<< (password on stdin)"


def test_podman_keeps_what_the_base_sets_and_commits_in_dockers_format():
    assert podman.unset_added(["PATH=/bin", "TERM=vt100"]) == ("--unsetenv", "container")
    assert podman.unset_added(None) == ("--unsetenv", "TERM", "--unsetenv", "container")
    assert podman.commit("c", ["CMD [\"bash\"]"], "r.io/a:1")[:3] == ("commit", "--format",
                                                                     "docker")
    assert podman.push("r/x:1", (), False, None) == ("push", "r/x:1")


def test_rootless_podman_refuses_the_automounter_at_once(project, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    done = lwc("--dry-run", cwd=project, FROM="lwc/base:1", LWC_ENGINE="podman",
               LWC_CVMFS="automounter")
    # the dry run's 'podman info' answers as this process runs: root here
    assert done.returncode == 0
    s = settings_for(project, LWC_ENGINE="podman", LWC_CVMFS="automounter")
    engine = make_engine(s, Recorder({("info",): ok("true\n")}),
                         Stages(s, Masker(), __import__("io").StringIO()), {"PATH": "/bin"})
    engine.wait_daemon()
    with pytest.raises(ConfigError, match="^LWC_CVMFS: the automounter .*needs root.*host's "
                                          "CVMFS client"):
        engine.check_cvmfs_source("automounter", "LWC_CVMFS=automounter")
    engine.check_cvmfs_source("host", "LWC_CVMFS=host")  # the host's CVMFS is fine


# -- the seam ----------------------------------------------------------------------------------
def test_every_engine_name_has_a_folder_and_single_stages_are_the_engines_to_say(project):
    assert set(IMPLEMENTATIONS) == {"docker", "podman", "inplace"}
    for name in IMPLEMENTATIONS:
        assert (PACKAGE / "engines" / name / "engine.py").is_file()
    s = settings_for(project, LWC_ENGINE="inplace")
    with pytest.raises(ConfigError, match="^LWC_ENGINE: 'lwcontainer build' runs one stage"):
        make_engine(s, DryRunExecutor(Masker()), Stages(s, Masker(), None), {}, "build")
    done = lwc("build", "--dry-run", cwd=project, FROM="r.io/x:1", LWC_ENGINE="inplace")
    assert done.returncode == int(ExitCode.CONFIG) and "runs one stage" in done.stderr


def modules(*folders: str):
    for folder in folders:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text())


def imported(tree: ast.AST, path: Path) -> set[str]:
    """The lwcontainer modules ``path`` imports (relative imports resolved)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                out.add(".".join((*base, *(node.module or "").split("."))).strip("."))
            elif (node.module or "").startswith("lwcontainer"):
                out.add(node.module)
    return out


def test_layers_point_down():
    for path, tree in modules("config", "output"):
        for name in imported(tree, path):
            assert name.split(".")[1] in ("config", "output", "errors"), (path, name)
    for path, tree in modules("ci"):
        assert not any(".engines" in n or n.endswith(".cli") for n in imported(tree, path)), path


def test_no_program_is_named_above_the_engines():
    """Nothing outside engines/docker/ (and podman's own folder) runs or names the docker
    program: every step's program comes from an engine's EngineCli."""
    for path, tree in modules("."):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("engines/docker/", "engines/podman/")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Step":
                assert any(k.arg == "program" for k in node.keywords), rel
        if rel in ("config/settings.py", "ci/templates.py", "ci/scaffold.py"):
            continue  # the engine names (a constant) and the CI files init writes
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and n.value.strip().lower() == "docker"]
        assert strings == [], rel


# -- the automatic choice ----------------------------------------------------------------------
def programs(tmp_path: Path, *names: str) -> str:
    """A PATH holding stand-ins for ``names`` (the probe itself is the fake executor's)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    return str(folder)


def choose(project: Path, environ: dict, answers: dict, dry_run: bool = False,
           publishes: bool = False, **env: str) -> tuple[str, Recorder]:
    x = Recorder(answers)
    x.dry_run = dry_run
    s = settings_for(project, **env)
    return choose_engine(s, x, environ, publishes).engine, x


DOCKER = {("--version",): ok("Docker version 28.0.1, build 068a01e\n"),
          ("version",): ok("28.0.1\n")}


def test_lwc_engine_given_wins_and_asks_nothing(project, tmp_path):
    (project / LAYER_FILE).write_bytes(b"x")
    engine, x = choose(project, {"PATH": programs(tmp_path, "docker")}, DOCKER, publishes=True,
                       LWC_ENGINE="docker")
    assert engine == "docker" and x.calls == []


def test_a_dry_run_and_ci_plan_docker_without_asking(project, tmp_path):
    path = programs(tmp_path, "docker", "podman")
    engine, x = choose(project, {"PATH": path}, {}, dry_run=True)
    assert engine == "docker" and x.calls == []
    engine, x = choose(project, {"PATH": path, "GITLAB_CI": "true"}, {})
    assert engine == "docker" and x.calls == []


def test_workstation_docker_when_it_answers_else_podman(project, tmp_path):
    both = {"PATH": programs(tmp_path, "docker", "podman")}
    assert choose(project, both, DOCKER)[0] == "docker"
    silent = {**DOCKER, ("version",): failed("Cannot connect to the Docker daemon at unix:///"
                                             "var/run/docker.sock. Is the docker daemon running?")}
    assert choose(project, both, silent)[0] == "podman"
    (tmp_path / "d").mkdir()
    only_docker = {"PATH": programs(tmp_path / "d", "docker")}
    assert choose(project, only_docker, silent)[0] == "docker"  # its own error follows
    shim = {("--version",): ok("podman version 4.3.1\n"), ("version",): ok("4.3.1\n")}
    engine, x = choose(project, both, shim)
    assert engine == "podman"  # its name decides, whatever its 'version' says
    (tmp_path / "p").mkdir()
    no_docker = {"PATH": programs(tmp_path / "p", "podman")}
    assert choose(project, no_docker, {})[0] == "podman"


def test_a_docker_command_that_links_to_podman_is_podman(project, tmp_path):
    """A link named docker says "docker version 4.3.1" (podman names itself after argv[0]): the
    file it resolves to decides, before anything runs."""
    real = tmp_path / "libexec" / "podman"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\nexit 0\n")
    real.chmod(0o755)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "docker").symlink_to(real)
    (shim / "podman").symlink_to(real)
    linked = {("--version",): ok("docker version 4.3.1\n"), ("version",): ok("4.3.1\n")}
    engine, x = choose(project, {"PATH": str(shim)}, linked)
    assert engine == "podman" and x.calls == []
    (shim / "docker").unlink()
    (shim / "docker").symlink_to(programs(tmp_path, "docker") + "/docker")  # docker's own
    assert choose(project, {"PATH": str(shim)}, DOCKER)[0] == "docker"


def test_a_docker_engine_the_choice_heard_answer_is_not_asked_again(project, tmp_path):
    environ = {"PATH": programs(tmp_path, "docker", "podman")}
    x = Recorder(DOCKER)
    s = choose_engine(settings_for(project), x, environ)
    assert (s.engine, s.engine_answered) == ("docker", "28.0.1")
    make_engine(s, x, Stages(s, Masker(), None), environ).wait_daemon()
    assert len(x.ran("version")) == 1  # the probe's answer stands: no second round trip
    # a docker context picks the user's engine; the run's private config carries it
    # (test_security.py, test_workstation_e2e.py): the answer stands
    x = Recorder(DOCKER)
    s = choose_engine(settings_for(project, CI_REGISTRY="r.io", CI_REGISTRY_USER="u",
                                   CI_REGISTRY_PASSWORD="p"), x,
                      {**environ, "DOCKER_CONTEXT": "rootless"})
    assert (s.engine, s.engine_answered) == ("docker", "28.0.1")
    silent = Recorder({**DOCKER, ("version",): failed("Cannot connect to the Docker daemon")})
    (tmp_path / "d").mkdir()
    s = choose_engine(settings_for(project), silent, {"PATH": programs(tmp_path / "d", "docker")})
    assert (s.engine, s.engine_answered) == ("docker", "")  # wait-daemon still waits for it


def test_a_refused_docker_socket_decides_at_once(project, tmp_path):
    denied = {**DOCKER, ("version",): failed(
        "permission denied while trying to connect to the Docker daemon socket at "
        "unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: "
        "permission denied")}
    both = {"PATH": programs(tmp_path, "docker", "podman")}
    engine, x = choose(project, both, denied)
    assert engine == "podman" and len(x.ran("version")) == 1  # asked once, no waiting
    (tmp_path / "d").mkdir()
    with pytest.raises(EngineError, match="add yourself to the docker group.*or install "
                                          "podman") as raised:
        choose(project, {"PATH": programs(tmp_path / "d", "docker")}, denied)
    assert raised.value.exit_code == ExitCode.ENGINE


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(project),
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_publish_with_an_untracked_layer_chooses_inplace_a_committed_one_never(project, tmp_path):
    environ = {"PATH": programs(tmp_path, "docker") + ":/usr/bin:/bin"}
    (project / LAYER_FILE).write_bytes(b"layer")
    assert untracked_layer(project, environ)[0] is True  # no checkout at all
    git(project, "init", "-q")
    (project / ".gitignore").write_text(LAYER_FILE + "\n")
    engine, x = choose(project, environ, DOCKER, publishes=True)
    assert engine == "inplace" and x.calls == []
    assert choose(project, environ, DOCKER)[0] == "docker"  # not for the whole job
    git(project, "add", "-f", LAYER_FILE)
    git(project, "commit", "-q", "-m", "a layer in the checkout")
    assert choose(project, environ, DOCKER, publishes=True)[0] == "docker"
    done = lwc("publish", "--dry-run", cwd=project, FROM="r.io/x:1", LWC_ENGINE="")
    assert done.returncode == 0 or "engine_chosen" in done.stderr
    assert '"engine": "inplace"' not in done.stderr


def test_publish_by_hand_with_the_layer_of_a_capture_uses_inplace(project):
    (project / LAYER_FILE).write_bytes(b"layer")
    done = lwc("publish", "--dry-run", cwd=project, FROM="r.io/x:1", LWC_ENGINE="")
    assert '"engine": "inplace"' in done.stderr and "git does not track" in done.stderr


def test_push_never_lets_a_layer_file_in_the_checkout_choose_the_engine(project):
    """'push' is what a failed docker push says to run again; the build script that ran in the
    checkout could have written a layer file there."""
    (project / LAYER_FILE).write_bytes(b"layer")
    done = lwc("push", "--dry-run", cwd=project, FROM="r.io/x:1", LWC_ENGINE="", CI="true")
    assert '"engine": "docker"' in done.stderr, done.stderr[-2000:]
    assert '"engine": "inplace"' not in done.stderr


def test_podman_lists_build_containers_with_its_own_label_template(project):
    s = settings_for(project, LWC_ENGINE="podman")
    listing = "c1\tlwc-a\tCreated\tnowhere/1/2\t\nc2\tlwc-b\trunning\tnowhere/1/2\t\n"
    x = Recorder({("ps",): ok(listing)})
    engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"})
    from lwcontainer.engines.docker import owner
    in_use = owner.remove_orphans(engine.docker)
    ps = x.ran("ps")[0]
    assert '{{index .Labels "lwcontainer.owner"}}' in ps[-1] and ".Label " not in ps[-1]
    # the state as one word: podman's .State is "Up 1 second ago" (test_podman_e2e.py)
    assert ps[-1].split("\t")[2] == "{{.ListContainer.State}}"
    assert [c.name for c in in_use] == ["lwc-a", "lwc-b"]  # podman's "Created" too


def test_podman_removes_a_container_without_waiting_for_it_to_stop(project):
    """podman's rm --force would stop first: SIGTERM, then 10 s for a PID 1 that ignores it
    (a build's /bin/bash). Every removal gets --time 0; docker's rm --force kills at once."""
    from lwcontainer.engines.docker import owner
    from lwcontainer.engines.docker.buildcontainer import BuildContainer
    gone = f"{owner.this_host()}/999999999/1"  # a run that no longer exists: an orphan
    for name, expected in (("podman", ("--time", "0")), ("docker", ())):
        s = settings_for(project, LWC_ENGINE=name)
        x = Recorder({("ps",): ok(f"c1\tlwc-orphan\trunning\t{gone}\t1\n")})
        engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"})
        box = BuildContainer(s, engine.docker)
        box.remove()
        owner.remove_orphans(engine.docker)
        assert x.ran("rm") == [("rm", "--force", *expected, "--volumes", box.name),
                               ("rm", "--force", *expected, "--volumes", "c1")], name


def test_podman_pulls_the_automounter_image_as_it_pulls_from(project):
    """A missing automounter image is pulled by the engine's own pull: podman's fully qualified
    name, its auth file, and --tls-verify=false only for loopback and listed registries."""
    from lwcontainer.executor import Completed
    inspected = ok('[{"Config": {"Cmd": ["/run-automounter"]}}]')
    missing = Completed(1, "", "Error: no such image")
    cases = {"127.0.0.1:5055/cvmfs/automounter:1": ("--tls-verify=false",),
             "mirror.lab:5000/cvmfs/automounter:1": ("--tls-verify=false",),
             "r.io/cvmfs/automounter:1": (),
             "cvmfs/automounter:1": ()}
    for image, tls in cases.items():
        name = image if "." in image.split("/")[0] else f"docker.io/{image}"
        s = settings_for(project, LWC_ENGINE="podman", LWC_AUTOMOUNTER_IMAGE=image,
                         LWC_INSECURE_REGISTRIES="mirror.lab:5000")
        x = Recorder({("image", "inspect"): inspected})
        engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"})
        assert engine.automounter().image_command(missing) == ("/run-automounter",)
        assert x.ran("pull") == [("pull", "--quiet", *tls, name)], image
    s = settings_for(project, LWC_ENGINE="docker", LWC_AUTOMOUNTER_IMAGE="127.0.0.1:5055/a:1")
    x = Recorder({("image", "inspect"): inspected})
    make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"}).automounter().image_command(
        missing)
    assert x.ran("pull") == [("pull", "--quiet", "127.0.0.1:5055/a:1")]  # docker's own rule


def test_podman_pulls_an_image_to_run_by_its_own_pull_not_by_run(project):
    """'lwcontainer run IMAGE' of an image not in the engine: pulled first with the engine's
    pull (podman's TLS rule), never implicitly by 'podman run' (which would keep TLS)."""
    from lwcontainer.engines.docker import subcommands
    from lwcontainer.executor import Completed
    s = settings_for(project, LWC_ENGINE="podman", LWC_CVMFS="none")
    x = Recorder({("image", "inspect"): Completed(1, "", "Error: no such image")})
    engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"})
    assert subcommands.run_image(engine, "127.0.0.1:5055/me/ana:1", None, False, ("true",)) == 0
    assert x.argvs()[-2:] == ["pull --quiet", "run --rm"]
    assert x.ran("pull") == [("pull", "--quiet", "--tls-verify=false",
                              "127.0.0.1:5055/me/ana:1")]


def test_podman_keeps_the_runs_auth_file_in_the_users_runtime_directory(project, tmp_path):
    """$XDG_RUNTIME_DIR (the user's own, 0700: where podman keeps its auth file) when usable,
    else $TMPDIR; stale directories of killed runs are removed from both."""
    import secrets
    import tempfile
    from lwcontainer.engines.podman.engine import PREFIX
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    killed = f"{PREFIX}999999999-{secrets.token_hex(6)}"  # no such process
    stale = [runtime / killed, Path(tempfile.gettempdir()) / killed]
    for directory in stale:
        directory.mkdir()
        (directory / "auth.json").write_text('{"auths": {"r.io": {"auth": "x"}}}')
    login = {"CI_REGISTRY": "r.io", "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "t"}
    s = settings_for(project, LWC_ENGINE="podman", **login)
    x = Recorder({})

    def planned(environ: dict):
        engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin", **environ})
        return Path(engine.cli.auth), engine

    auth, engine = planned({"XDG_RUNTIME_DIR": str(runtime)})
    assert auth.parent.parent == runtime and auth.parent.name.startswith(PREFIX)
    with engine.private_context():
        assert auth.is_file() and oct(auth.parent.stat().st_mode & 0o777) == "0o700"
        assert not any(d.exists() for d in stale)
    assert not auth.parent.exists()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    for environ in ({}, {"XDG_RUNTIME_DIR": str(shared)},
                    {"XDG_RUNTIME_DIR": str(tmp_path / "missing")}):
        assert planned(environ)[0].parent.parent == Path(tempfile.gettempdir()), environ


def test_a_podman_without_rm_time_removes_the_container_as_it_can(project):
    """Podman before 4.0 (Ubuntu 22.04's 3.4) has no ``rm --time``: its "unknown flag" is
    answered by the removal it knows, so build, lease and orphan containers still go."""
    from lwcontainer.engines.docker.buildcontainer import BuildContainer
    s = settings_for(project, LWC_ENGINE="podman")
    x = Recorder({("rm", "--force", "--time"): failed("Error: unknown flag: --time", 125)})
    engine = make_engine(s, x, Stages(s, Masker(), None), {"PATH": "/bin"})
    box = BuildContainer(s, engine.docker)
    box.remove()
    assert x.ran("rm") == [("rm", "--force", "--time", "0", "--volumes", box.name),
                           ("rm", "--force", "--volumes", box.name)]
    assert box.removed
