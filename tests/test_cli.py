"""The command line as a user meets it: help, exit codes, dry run; no engine needed."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lwcontainer.errors import EXIT_MEANINGS
from lwcontainer.config.settings import SPECS

from conftest import ROOT, lwc


def test_help_settings_lists_every_setting_and_help_exit_codes_every_code(project):
    done = lwc("help", "settings", cwd=project)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for spec in SPECS:
        assert spec.variable in text and " ".join(spec.help.split()) in text
        if not spec.secret:
            assert spec.switch in text
    codes = lwc("help", "exit-codes", cwd=project).stdout
    for code, meaning in EXIT_MEANINGS.items():
        assert f"{int(code):>4}  {meaning}" in codes


@pytest.mark.parametrize("command", ["", "login", "automount", "build", "run", "init", "commit",
                                     "push", "publish"])
def test_help_fits_a_screen_and_lists_the_switches_the_command_uses(project, command):
    done = lwc(*filter(None, [command]), "--help", cwd=project)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) <= 65
    if command in ("build", "push"):
        assert "--from" in done.stdout and "--automounter-options" not in done.stdout \
            if command == "push" else "--automounter-options" in done.stdout


def test_readme_is_in_step_with_the_code():
    """README's settings and exit-code tables are the code's (scripts/readme_tables.py)."""
    readme = (ROOT / "README.md").read_text()
    for spec in SPECS:
        assert f"| `{spec.variable}`{' (.env)' if spec.dotenv else ''} |" in readme
    for code, meaning in EXIT_MEANINGS.items():
        assert f"| {int(code)} | {meaning} |" in readme
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"])
    assert check.returncode == 0, "run scripts/readme_tables.py to refresh README's tables"
    commands = re.findall(r"^make \w+", readme, re.M)
    assert sorted(set(commands)) == ["make image", "make test"]  # (one offline variant)


@pytest.mark.parametrize("env, setting", [
    ({}, "FROM"),
    ({"FROM": "cms/base", "TO": "Bad Ref"}, "TO"),
    ({"FROM": "cms/base", "CI_REGISTRY": "r.io", "CI_REGISTRY_USER": "u"}, "CI_REGISTRY_PASSWORD"),
    ({"FROM": "cms/base", "LWC_BUILD_SCRIPT": "nope.sh"}, "LWC_BUILD_SCRIPT"),
])
def test_config_errors_exit_2_naming_the_setting_without_traceback(project, env, setting):
    done = lwc(cwd=project, DOCKER_HOST="unix:///nonexistent.sock", **env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f'"error": "{setting}:' in done.stderr


def test_malformed_env_file_exits_2(project):
    (project / ".env").write_text("FROM cms/base\n")
    done = lwc(cwd=project)
    assert done.returncode == 2 and "line 1" in done.stderr and "Traceback" not in done.stderr


def test_unknown_switch_or_command_exits_2(project):
    assert lwc("--no-such-switch", cwd=project).returncode == 2
    assert lwc("frobnicate", cwd=project, FROM="a").returncode == 2


def test_dry_run_prints_the_plan_masked_and_touches_no_engine(project):
    done = lwc("--dry-run", cwd=project, FROM="cms/base:1", CI_REGISTRY="r.io",
               CI_REGISTRY_USER="me", CI_JOB_TOKEN="s3cr3t-t0ken", CI_REGISTRY_IMAGE="r.io/me/a",
               CI_COMMIT_SHORT_SHA="abc12345", DOCKER_HOST="unix:///nonexistent.sock")
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    assert "s3cr3t-t0ken" not in plan + done.stderr
    expected = ["login --username me --password-stdin r.io", "pull --quiet cms/base:1",
                "run --detach --name cvmfs --pid=host --user 0 --privileged --restart always",
                "create --name lwc-", "lwc-cvmfs-check 300 1 cms.cern.ch "
                "/bin/bash ./.gitlab/build.sh", "start --attach lwc-", "commit --change",
                "push r.io/me/a:abc12345"]
    positions = [plan.find(fragment) for fragment in expected]
    assert all(p >= 0 for p in positions), plan
    assert positions == sorted(positions)
    commit = next(line for line in plan.splitlines() if " commit " in line)
    assert commit.endswith(" r.io/me/a:abc12345")  # named by the commit: no tag step
    assert not [line for line in plan.splitlines() if " tag " in line]
    assert not (project / "lwcontainer.env").exists()


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9"])
def test_unreachable_engine_exits_3_after_the_timeout_naming_the_address(project, host):
    import time
    started = time.monotonic()
    done = lwc(cwd=project, FROM="cms/base:1", DOCKER_HOST=host, LWC_DOCKER_TIMEOUT="2")
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert 2 <= elapsed < 15
    assert host in done.stderr and "LWC_DOCKER_TIMEOUT" in done.stderr


def test_dry_run_says_what_it_cannot_know_of_the_base(project):
    done = lwc("--dry-run", cwd=project, FROM="r.io/cms/base:1", LWC_CVMFS="none")
    assert done.returncode == 0, done.stderr
    assert "'CMD (from the base image)'" in done.stdout
    assert "'WORKDIR (from the base image)'" in done.stdout
    assert "CMD [\"/bin/sh\"]" not in done.stdout
