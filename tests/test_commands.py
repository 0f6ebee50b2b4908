import subprocess
import threading
from pathlib import Path

import pytest

from lwcontainer.engines.docker import commands
from lwcontainer.config.settings import Settings


@pytest.fixture
def s(tmp_path: Path) -> Settings:
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    return Settings.from_mapping({"FROM": "cms/cc7:1", "LWC_CVMFS_MOUNTS": "/srv/mounts/",
                                  "LWC_CVMFS_REPOS": "cms.cern.ch,grid.cern.ch"}, cwd=tmp_path)


def test_login_takes_password_from_stdin_only():
    assert commands.login("r.io", "user") == ("login", "--username", "user", "--password-stdin",
                                              "r.io")


def test_automounter_is_the_recipes_with_privileged_by_default(s):
    argv = commands.automounter_run(s, ("/init.sh", "--foreground"),
                                    ("--label", "lwcontainer.owner=h/1/2"))
    assert argv == (
        "run", "--detach", "--name", "cvmfs", "--pid=host", "--user", "0", "--privileged",
        "--restart", "always", "--label", "lwcontainer.role=automounter",
        "--label", "lwcontainer.owner=h/1/2",
        "-v", "/srv/mounts:/cvmfsmounts:rshared", "--entrypoint", "/bin/sh",
        "gitlab-registry.cern.ch/vcs/cvmfs-automounter:master",
        "-c", commands.PURGE_THEN_EXEC, "automounter", "/cvmfsmounts/cvmfs", "/init.sh",
        "--foreground")
    assert commands.PURGE_THEN_EXEC.endswith('exec "$@"')


def test_automounter_options_replace_privileged(tmp_path):
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    s = Settings.from_mapping({"FROM": "a", "LWC_AUTOMOUNTER_OPTIONS":
                               "--cap-add SYS_ADMIN --security-opt 'seccomp=unconfined'"},
                              cwd=tmp_path)
    argv = commands.automounter_run(s, ("/run",))
    assert "--privileged" not in argv
    assert argv[7:11] == ("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined")


def test_build_run_is_unprivileged_with_rslave_cvmfs_and_checkout(s):
    project = str(s.project_dir)
    volume = commands.cvmfs_volume("automounter", s)
    argv = commands.build_create(s, "lwc-x-local-1234", volume)
    assert argv == ("create", "--name", "lwc-x-local-1234", "--label", "lwcontainer.role=build",
                    "-v", "/srv/mounts/cvmfs:/cvmfs:rslave", "-v", f"{project}:{project}",
                    "-w", project, "cms/cc7:1", "/bin/bash", "./.gitlab/build.sh")
    assert not any(a.startswith(("--privileged", "--cap-add", "--security-opt")) for a in argv)


def test_cvmfs_volume_per_source(s):
    assert commands.cvmfs_volume("automounter", s) == ("-v", "/srv/mounts/cvmfs:/cvmfs:rslave")
    assert commands.cvmfs_volume("host", s) == ("-v", "/cvmfs:/cvmfs:ro,rslave")
    assert commands.cvmfs_volume("host", s, propagate=False) == ("-v", "/cvmfs:/cvmfs:ro")


def test_host_cvmfs_follows_later_mounts_only_on_a_shared_mount():
    from pathlib import Path
    from lwcontainer.engines.docker.cvmfs import on_shared_mount
    info = ("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
            "30 22 0:40 / /cvmfs rw,relatime shared:12 - autofs systemd-1 rw\n"
            "31 22 0:41 / /srv/plain rw,relatime master:3 - ext4 /dev/vdb rw\n")
    assert on_shared_mount(Path("/cvmfs"), info) is True
    assert on_shared_mount(Path("/cvmfs/cms.cern.ch"), info) is True
    assert on_shared_mount(Path("/srv/plain/cvmfs"), info) is False
    assert on_shared_mount(Path("/home/me/cvmfs"), info) is False
    assert commands.cvmfs_volume("none", s) == ()


def test_run_image_argv():
    volume = ("-v", "/cvmfs:/cvmfs:ro,rslave")
    assert commands.run_image("img:1", volume, None, False, ("ls", "/cvmfs")) == (
        "run", "--rm", "-v", "/cvmfs:/cvmfs:ro,rslave", "img:1", "ls", "/cvmfs")
    assert commands.run_image("img:1", (), "/w", True, ()) == (
        "run", "--rm", "-it", "-v", "/w:/w", "-w", "/w", "img:1")


def test_probes_pass_repositories_as_arguments_not_code(s):
    argv = commands.watch_as_build(commands.cvmfs_volume("automounter", s), "cms/cc7:1",
                                   "probe-1", 30, s.cvmfs_repos)
    assert argv[-5:] == ("watch", "30", "/cvmfs", "cms.cern.ch", "grid.cern.ch")
    assert argv[:4] == ("run", "--rm", "--name", "probe-1")
    assert "cms.cern.ch" not in argv[argv.index("-c") + 1]
    assert commands.look_in_automounter(s, 5)[-5:] == ("look", "5", "/cvmfsmounts/cvmfs",
                                                       "cms.cern.ch", "grid.cern.ch")


def test_commit_changes_restore_base_config():
    base = {"Cmd": ["/bin/bash", "-l"], "Entrypoint": ["/init"], "WorkingDir": "/home/cmsusr",
            "User": "cmsusr"}
    changes = commands.commit_changes(base, {"org.opencontainers.image.revision": 'a"b c'})
    assert changes[:4] == ('CMD ["/bin/bash", "-l"]', 'ENTRYPOINT ["/init"]',
                           "WORKDIR /home/cmsusr", "USER cmsusr")
    assert 'LABEL "org.opencontainers.image.revision"="a\\"b c"' in changes
    assert 'LABEL "lwcontainer.role"="image"' in changes


def test_commit_changes_for_a_bare_base():
    changes = commands.commit_changes({"Cmd": None, "WorkingDir": ""}, {})
    assert changes[0] == 'CMD ["/bin/sh"]'
    assert "WORKDIR /" in changes
    assert not any(c.startswith(("USER", "ENTRYPOINT")) for c in changes)


def test_commit_argv():
    assert commands.commit("c1", ["CMD []", "WORKDIR /"], "r.io/a:1") == (
        "commit", "--change", "CMD []", "--change", "WORKDIR /", "c1", "r.io/a:1")


def test_the_world_writable_check_reads_the_layers_entries_and_changes_nothing():
    from lwcontainer.engines.docker import modes
    assert modes.layer_paths("A /x\nC /home\nD /gone\nA /x/f\n") == ["/x", "/home", "/x/f"]
    create = modes.layer_check_create("c-modes", "cms/base:1", "/var/lib/d/diff", ())
    assert create[:5] == ("create", "--rm", "--interactive", "--name", "c-modes")
    assert "/var/lib/d/diff:/lwc-layer:ro" in create
    for argv in (create, modes.of_paths_run("sha256:abc")):  # root that may only read
        text = " ".join(argv)
        assert "--cap-drop ALL --cap-add DAC_OVERRIDE" in text  # of the default set only
        assert "DAC_READ_SEARCH" not in text  # open_by_handle_at: the host's files
        assert "--security-opt no-new-privileges" in text and "--workdir /" in text
    run = modes.of_paths_run("sha256:abc")
    assert run[:5] == ("run", "--rm", "-i", "--network", "none") and "sha256:abc" in run
    assert modes.GATED.endswith(modes.IN_LAYER)  # after the word to go, on its stdin
    for script in (modes.GATED, modes.OF_PATHS):
        assert not any(word in script.replace("2>/dev/null", "")
                       for word in ("chmod", "chown", ">", " rm "))  # only reads
        assert "-perm -0002" in script and "! -perm -1000" in script


def test_a_pull_that_cannot_reach_a_registry_names_it_or_says_the_name_has_none():
    from lwcontainer.engines.docker.failures import pull_failure
    from lwcontainer.errors import EngineError
    from lwcontainer.executor import Completed
    down = Completed(1, "", "dial tcp: lookup r.example: no such host")
    named = pull_failure("FROM", "r.example:5000/cms/base:1", down, logged_in=False)
    assert isinstance(named, EngineError) and "registry r.example:5000 could not" in str(named)
    bare = pull_failure("FROM", "foo_bar.com/x:1", down, logged_in=False)
    assert "failed: its registry could not be reached" in str(bare) and "None" not in str(bare)


def check_then_exec(root: Path, wait_s: int, *repos: str) -> subprocess.CompletedProcess:
    """The build container's first step, run by bash here with ``root`` for /cvmfs."""
    script = commands.CHECK_THEN_EXEC.replace('"/cvmfs/$r"', f'"{root}/$r"')
    assert script != commands.CHECK_THEN_EXEC
    return subprocess.run(["bash", "-c", script, "lwc-cvmfs-check", str(wait_s), str(len(repos)),
                           *repos, "bash", "-c", 'echo "built with $# args: $*"', "x", "a b"],
                          capture_output=True, text=True, timeout=30)


def test_the_build_container_runs_the_script_once_every_repository_has_entries(tmp_path):
    for repo, entry in (("cms.cern.ch", "cmsset_default.sh"), ("grid.cern.ch", ".hidden")):
        (tmp_path / repo).mkdir()
        (tmp_path / repo / entry).write_text("")
    done = check_then_exec(tmp_path, 5, "cms.cern.ch", "grid.cern.ch")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "built with 1 args: a b\n"  # the rest, exec'd with its own arguments
    assert f"{commands.CVMFS_READY} cms.cern.ch grid.cern.ch" in done.stderr


@pytest.mark.parametrize("state", ["empty", "absent", "a file"])
def test_the_build_container_names_a_repository_that_never_comes(tmp_path, state):
    (tmp_path / "cms.cern.ch").mkdir()
    (tmp_path / "cms.cern.ch" / "x").write_text("")
    if state == "empty":
        (tmp_path / "grid.cern.ch").mkdir()
    elif state == "a file":
        (tmp_path / "grid.cern.ch").write_text("not a directory")
    done = check_then_exec(tmp_path, 1, "cms.cern.ch", "grid.cern.ch")
    assert done.returncode == commands.CVMFS_MISSING_EXIT
    assert done.stdout == ""  # the build script never ran
    assert done.stderr.strip().endswith(f"{commands.CVMFS_MISSING} grid.cern.ch")


def test_the_build_container_waits_for_a_mount_that_comes_later(tmp_path):
    (tmp_path / "cms.cern.ch").mkdir()
    later = threading.Timer(0.3, (tmp_path / "cms.cern.ch" / "x").write_text, ("",))
    later.start()
    try:
        done = check_then_exec(tmp_path, 10, "cms.cern.ch")
    finally:
        later.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built with")
