"""The whole pipeline on the real test bed: engine, authenticated registry, automounter stand-in
with real rshared/rslave propagation, and the CMS-like base image with g++."""
from __future__ import annotations

import json
import os
import re
import time

from dotenv import dotenv_values

from conftest import STANDIN_OPTIONS as STANDIN

STAGES = ["wait-daemon", "login", "automounter", "cvmfs", "build", "commit", "tag", "push",
          "report"]


def registry_client(job, tmp_path):
    """The test's own docker client config, logged in to the registry (not lwcontainer's)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "verifier")}
    job.bed.docker("login", "--username", job.bed["LWC_TESTBED_USER"], "--password-stdin",
                   job.bed["LWC_TESTBED_REGISTRY"], input=job.bed.password, env=env)
    return env


def test_full_pipeline_pushes_a_runnable_image(job, tmp_path):
    result = job.run(CI_PROJECT_URL="https://gitlab.example/me/ana", CI_JOB_ID="4711",
                     CI_COMMIT_SHA="c0ffee12" + "0" * 32, LWC_EXTRA_TAGS="latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stages() == STAGES
    assert result.stages("skipped") == ["pull"]  # FROM is in the engine, LWC_PULL=missing
    # The build's own output went to stdout, the log records to stderr.
    assert ">> Built /home/cmsusr/CMSSW_10_6_8_patch1/bin/" in result.stdout
    assert not any(line.startswith("{") for line in result.stdout.splitlines())
    # The build container's first step said when CVMFS was there, before the build script.
    said = result.stderr.index("lwcontainer: CVMFS ready in the build container: cms.cern.ch\n")
    assert said < result.stderr.index('"stage": "commit"')
    assert result.stderr.index("lwcontainer: checking CVMFS in the build container: "
                               "cms.cern.ch\n") < said  # its first line: it runs
    own = ("login:", "pull:", "\x1b")  # nothing of lwcontainer's own outside CI
    assert not any(line.startswith(own) for line in result.stdout.splitlines())

    report = dotenv_values(job.project / "lwcontainer.env")
    to, latest = f"{job.repository}:c0ffee12", f"{job.repository}:latest"
    assert report["LWC_IMAGE"] == to
    assert report["LWC_TAGS"] == f"{to},{latest}"
    assert report["LWC_IMAGE_ID"].startswith("sha256:")
    assert report["LWC_IMAGE_DIGEST"].startswith(f"{job.repository}@sha256:")
    assert 1000 < int(report["LWC_LAYER_SIZE"]) < 5_000_000

    # Cleanup: no build container, no automounter (this run started it), no mounts left.
    assert job.containers() == []
    assert job.leftover_mounts() == []

    # Pull it back from the registry, as a user would.
    job.bed.docker("rmi", to, latest)
    client = registry_client(job, tmp_path)
    job.bed.docker("pull", to, env=client)
    job.bed.docker("pull", latest, env=client)
    info = json.loads(job.bed.docker("image", "inspect", to).stdout)[0]
    latest_info = json.loads(job.bed.docker("image", "inspect", latest).stdout)[0]
    assert latest_info["Id"] == info["Id"] == report["LWC_IMAGE_ID"]
    assert report["LWC_IMAGE_DIGEST"] in info["RepoDigests"]

    config = info["Config"]
    base = json.loads(job.bed.docker("image", "inspect", job.bed["LWC_TESTBED_CMS_BASE"]).stdout)[0]
    assert config["Cmd"] == base["Config"]["Cmd"] == ["/bin/bash"]
    assert config["WorkingDir"] == base["Config"]["WorkingDir"] == "/home/cmsusr"
    assert config["User"] == "cmsusr"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://gitlab.example/me/ana"
    assert labels["org.opencontainers.image.revision"] == "c0ffee12" + "0" * 32
    assert labels["org.opencontainers.image.base.name"] == \
        "docker.io/" + job.bed["LWC_TESTBED_CMS_BASE"]  # fully qualified, as OCI asks
    created = time.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(created) - time.mktime(time.gmtime())) < 600

    # The compiled analysis runs, and was built against the header from (fixture) CVMFS.
    ran = job.bed.docker("run", "--rm", to,
                         "CMSSW_10_6_8_patch1/bin/slc7_amd64_gcc820/myanalysis")
    assert ran.stdout.strip() == "MyAnalysis built against CMSSW_10_6_8_patch1 from fixture CVMFS"

    # No secret and no CI variable in the image.
    history = job.bed.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", to).stdout
    everything = json.dumps(info) + history
    assert job.bed.password not in everything
    assert not any(var.startswith(("CI_", "LWC_")) for var in config.get("Env") or [])
    assert job.bed.password not in result.stdout + result.stderr


def test_build_script_failure_exits_6_and_commits_nothing(job):
    (job.project / ".gitlab" / "build.sh").write_text("echo compiling; exit 3\n")
    result = job.run()
    assert result.returncode == 6, result.stderr[-2000:]
    failed = result.events("failed")[-1]
    assert "exited with code 3" in failed["error"]
    assert "compiling" in result.stdout
    assert "commit" not in result.stages() and "push" not in result.stages()
    assert job.bed.docker("image", "inspect", f"{job.repository}:c0ffee12",
                          check=False).returncode != 0
    assert job.containers() == []


def test_wrong_password_exits_4_before_building(job):
    result = job.run(CI_JOB_TOKEN="wrong-Pa55word")
    assert result.returncode == 4
    failed = result.events("failed")[-1]
    assert "unauthorized" in failed["error"].lower()
    assert "wrong-Pa55word" not in result.stdout + result.stderr
    assert "build" not in result.stages() and job.containers() == []


def test_mounts_dir_that_is_not_shared_fails_fast_with_the_fix(job, tmp_path):
    private = tmp_path / "private-mounts"
    private.mkdir()
    started = time.monotonic()
    result = job.run(LWC_CVMFS_MOUNTS=str(private))
    assert result.returncode == 5
    assert time.monotonic() - started < 30
    error = result.events("failed")[-1]["error"]
    assert "not on a shared mount" in error and "mount --make-rshared" in error
    assert job.containers() == []


def test_cvmfs_that_never_mounts_exits_5_in_time(job):
    started = time.monotonic()
    result = job.run(LWC_CVMFS_TIMEOUT="3",
                     LWC_AUTOMOUNTER_OPTIONS=f"{STANDIN} -e LWC_STANDIN_MODE=never")
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr[-2000:]
    assert elapsed < 3 + 15
    assert "cms.cern.ch" in result.events("failed")[-1]["error"]
    assert job.containers() == []


def test_stages_as_subcommands_build_commit_push(job):
    built = job.run("build")
    assert built.returncode == 0, built.stderr[-2000:]
    container = dotenv_values(job.project / "lwcontainer.env")["LWC_BUILD_CONTAINER"]
    assert container in job.containers()

    committed = job.run("commit")
    assert committed.returncode == 0, committed.stderr[-2000:]
    assert container not in job.containers()
    assert job.bed.docker("image", "inspect", f"{job.repository}:c0ffee12").returncode == 0

    pushed = job.run("push")
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    report = dotenv_values(job.project / "lwcontainer.env")
    assert report["LWC_IMAGE_DIGEST"].startswith(f"{job.repository}@sha256:")



def test_pull_from_the_registry_records_the_base_digest(job, tmp_path):
    """FROM in the registry, LWC_PULL=always: the pull stage runs (in the background, while
    CVMFS mounts) and the image names the base by digest."""
    base = f"{job.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/cms-base:{job.token}"
    job.bed.docker("tag", job.bed["LWC_TESTBED_CMS_BASE"], base)
    client = registry_client(job, tmp_path)
    pushed = job.bed.docker("push", base, env=client).stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed).group(1)
    job.bed.docker("rmi", base)  # only the registry has this name now
    try:
        result = job.run(FROM=base, LWC_PULL="always")  # the login lets the pull in
        assert result.returncode == 0, result.stderr[-3000:]
        assert "pull" in result.stages()
        labels = json.loads(job.bed.docker("image", "inspect", f"{job.repository}:c0ffee12")
                            .stdout)[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.base.digest"] == digest
        assert labels["org.opencontainers.image.base.name"] == base
    finally:
        job.bed.docker("rmi", base, check=False)


def test_no_cvmfs_mode_mounts_nothing(job):
    (job.project / ".gitlab" / "build.sh").write_text(
        "test -e /cvmfs/cms.cern.ch && exit 9; echo built > $HOME/marker\n")
    result = job.run(LWC_CVMFS="none", CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cvmfs" in result.stages("skipped") and "automounter" not in result.stages()
    ran = job.bed.docker("run", "--rm", f"{job.repository}:c0ffee12", "cat", "marker")
    assert ran.stdout.strip() == "built"
