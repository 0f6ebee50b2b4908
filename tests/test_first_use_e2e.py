"""A new user's first mistakes, on the real test bed: each ends with a message that names the
cause and the fix, the right exit code, and no wasted wait."""
from __future__ import annotations

import shutil
import time

import pytest

from conftest import ROOT

FIXTURE_CVMFS = ROOT / "tests" / "fixtures" / "cvmfs"


def failure(result) -> str:
    return result.events("failed")[-1]["error"]


def test_a_base_image_that_does_not_exist_is_exit_2_naming_from_without_retries(job):
    missing = f"{job.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/no-such-base:{job.token}"
    started = time.monotonic()
    result = job.run(FROM=missing, LWC_CVMFS="none")
    assert result.returncode == 2, result.stderr[-2000:]
    message = failure(result)
    assert message.startswith("FROM: ") and missing in message
    assert "does not have it locally" in message
    assert not result.events("retry") and time.monotonic() - started < 20


def test_a_private_image_without_a_login_is_exit_2_with_the_hint(job):
    private = f"{job.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/private:{job.token}"
    result = job.run(FROM=private, LWC_CVMFS="none", CI_REGISTRY=None, CI_REGISTRY_IMAGE=None)
    assert result.returncode == 2, result.stderr[-2000:]
    message = failure(result)
    assert message.startswith("FROM: ") and "misspelled, or private" in message


def test_an_unreachable_registry_is_exit_3_naming_the_host(job):
    result = job.run(FROM="127.0.0.1:9/lwc-tests/base:1", LWC_CVMFS="none", CI_REGISTRY=None,
                     CI_REGISTRY_IMAGE=None)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "127.0.0.1:9" in failure(result) and "could not be reached" in failure(result)
    failed = result.events("failed")
    assert len(failed) == 1 and "Docker engine" not in failed[0]["meaning"]  # it answered
    assert result.stderr.count("could not be reached") == 1  # printed once
    assert not [e for e in result.events("stage_done") if e.get("outcome") == "failed"
                and "error" in e]


def test_an_automounter_image_that_cannot_be_pulled_is_never_called_cvmfs(job):
    missing = f"{job.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/no-automounter:{job.token}"
    result = job.run(LWC_CVMFS="automounter", LWC_AUTOMOUNTER_IMAGE=missing)
    assert result.returncode == 2, result.stderr[-2000:]
    message = failure(result)
    assert message.startswith("LWC_AUTOMOUNTER_IMAGE: ") and "CVMFS not available" not in message


@pytest.mark.parametrize("where,says", [
    ("/nonexistent/cvmfs", "does not exist on this host"),
    (str(FIXTURE_CVMFS / "cms.cern.ch"), "is a repository itself"),
    ("EMPTY", "holds none of cms.cern.ch")])
def test_a_wrong_host_cvmfs_directory_is_said_at_once(job, tmp_path, where, says):
    if where == "EMPTY":
        where = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    started = time.monotonic()
    result = job.run(LWC_CVMFS="host", LWC_CVMFS_HOST_DIR=where)
    assert result.returncode == 2, result.stderr[-2000:]
    message = failure(result)
    assert message.startswith("LWC_CVMFS_HOST_DIR: ") and says in message
    assert "cms.cern.ch/cmsset_default.sh" in message  # the expected layout
    assert time.monotonic() - started < 30  # not LWC_CVMFS_TIMEOUT (300 s)
    assert not job.containers()


def test_a_misspelled_host_cvmfs_directory_under_auto_is_never_bypassed(job, tmp_path):
    """LWC_CVMFS=auto (the default) with a directory the user named: no quiet fallback to the
    automounter, the directory named at once, exit 2, one error line."""
    where = str(FIXTURE_CVMFS) + "-misspelled"
    result = job.run(LWC_CVMFS_HOST_DIR=where)
    assert result.returncode == 2, result.stderr[-2000:]
    assert failure(result).startswith(f"LWC_CVMFS_HOST_DIR: {where} does not exist")
    assert len(result.events("failed")) == 1
    assert result.stderr.count("LWC_CVMFS_HOST_DIR: ") == 1  # printed once
    assert not result.events("automounter_start") and not job.containers()


def test_host_cvmfs_builds_first_time(job):
    """The journey README promises: a local base image and a host CVMFS directory."""
    result = job.run(LWC_CVMFS="host", LWC_CVMFS_HOST_DIR=str(FIXTURE_CVMFS), CI_REGISTRY=None,
                     CI_REGISTRY_IMAGE=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ">> Done building" in result.stdout
    built = result.events("built")[0]
    assert built["tags"] == "local only" and built["image_id"].startswith("sha256:")


def test_a_repository_missing_from_host_cvmfs_stops_before_the_build_script(job):
    """The build container checks every repository as its first step: an empty directory does
    not count, the script never runs, and the message names the repository and the setting."""
    host = job.mounts / "host-partial"
    shutil.copytree(FIXTURE_CVMFS / "cms.cern.ch", host / "cms.cern.ch")
    (host / "grid.cern.ch").mkdir()
    (job.project / ".gitlab" / "build.sh").write_text("echo BUILD-SCRIPT-RAN\n")
    result = job.run(LWC_CVMFS="host", LWC_CVMFS_HOST_DIR=str(host), LWC_CVMFS_TIMEOUT="2",
                     LWC_CVMFS_REPOS="cms.cern.ch grid.cern.ch", CI_REGISTRY=None,
                     CI_REGISTRY_IMAGE=None)
    assert result.returncode == 5, result.stderr[-3000:]
    message = failure(result)
    assert message.startswith("CVMFS repositories not mounted after 2s (LWC_CVMFS_TIMEOUT): "
                              "grid.cern.ch; check ") and "(LWC_CVMFS_HOST_DIR)" in message
    assert "BUILD-SCRIPT-RAN" not in result.stdout
    assert not job.containers()
