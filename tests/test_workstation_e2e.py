"""The workstation journey on the real test bed: make image, run, host CVMFS, init, progress."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

from dotenv import dotenv_values

from conftest import EXAMPLE, ROOT

BINARY = "CMSSW_10_6_8_patch1/bin/slc7_amd64_gcc820/myanalysis"
FIXTURE_CVMFS = ROOT / "tests" / "fixtures" / "cvmfs"
EXPECTED = "MyAnalysis built against CMSSW_10_6_8_patch1 from fixture CVMFS"


def local_env(job, **extra: str) -> dict[str, str]:
    """A workstation: no CI variables at all."""
    env = {k: v for k, v in job.env(**extra).items() if not k.startswith("CI_")}
    return env


def readme_offline_line() -> list[str]:
    """The set-up section's one-line offline build, as argv."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("make image FROM="))
    return shlex.split(line.replace("$PWD", str(ROOT)))


def test_make_image_builds_a_local_runnable_image_and_pushes_nothing(job, tmp_path):
    """README's offline line, with the bed's base image as the local one."""
    project = tmp_path / f"ana-{job.token}"
    shutil.copytree(EXAMPLE, project)
    argv = [f"FROM={job.bed['LWC_TESTBED_CMS_BASE']}" if word.startswith("FROM=") else word
            for word in readme_offline_line()]
    assert f"LWC_CVMFS_HOST_DIR={FIXTURE_CVMFS}" in argv
    done = subprocess.run([*argv[:2], "-C", str(ROOT), *argv[2:], f"PROJECT={project}"],
                          env={**local_env(job), "MAKEFLAGS": ""}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert '"stage": "push"' in done.stderr and "no registry configured" in done.stderr
    assert '"stage": "login"' in done.stderr and '"outcome": "skipped"' in done.stderr
    report = dotenv_values(ROOT / "build" / "image" / project.name / "lwcontainer.env")
    # The project is no git repository: tagged latest, never with lwcontainer's own commit
    # (its scratch copy lies inside lwcontainer's checkout).
    assert report["LWC_IMAGE"] == f"lwcontainer/ana-{job.token}:latest"
    image = job.bed.docker("image", "inspect", report["LWC_IMAGE"], "--format",
                           "{{json .Config.Labels}}").stdout
    assert "org.opencontainers.image.revision" not in image
    assert report["LWC_IMAGE_DIGEST"] == ""
    ran = job.bed.docker("run", "--rm", report["LWC_IMAGE"], BINARY)
    assert ran.stdout.strip() == EXPECTED
    assert (project / "MyAnalysis").is_dir()  # the user's checkout was not touched
    job.bed.docker("rmi", report["LWC_IMAGE"], check=False)
    shutil.rmtree(ROOT / "build" / "image" / project.name, ignore_errors=True)


def test_run_sees_cvmfs_and_returns_the_commands_exit_code(job):
    built = job.run(CI_REGISTRY=None)
    assert built.returncode == 0, built.stderr[-2000:]
    image = dotenv_values(job.project / "lwcontainer.env")["LWC_IMAGE"]
    seen = job.run("run", image, "--", "cat", "/cvmfs/cms.cern.ch/cmsset_default.sh")
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert "alias cmsrel=" in seen.stdout
    # Default image: the last one built (the report); the command's own exit code comes back.
    code = job.run("run", "--", "sh", "-c", "test -x " + BINARY + " && exit 7")
    assert code.returncode == 7, code.stderr[-2000:]
    workspace = job.run("run", "--workspace", "--", "sh", "-c", "pwd; ls -a")
    assert str(job.project) in workspace.stdout and ".gitlab" in workspace.stdout
    # On a terminal (a pty from script(1)) the command gets a TTY.
    command = (f"{sys.executable} -m lwcontainer run -- sh -c "
               "'test -t 0 && test -t 1 && echo ON-A-TTY; exit 3'")
    tty = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=job.project,
                         env=job.env(CI_REGISTRY=None), capture_output=True, timeout=120)
    assert tty.returncode == 3, tty.stdout[-2000:]
    assert b"ON-A-TTY" in tty.stdout
    assert job.containers() == []


def test_host_cvmfs_mode_builds_without_an_automounter(job):
    host = job.mounts / "host-cvmfs"  # on the shared mount, as a host's /cvmfs is
    shutil.copytree(FIXTURE_CVMFS, host)
    for mode in ("host", "auto"):
        job.fresh_checkout()
        result = job.run(LWC_CVMFS=mode, LWC_CVMFS_HOST_DIR=str(host), CI_REGISTRY=None,
                         CI_COMMIT_SHORT_SHA=f"host-{mode}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.events("cvmfs_source")[0]["source"] == "host"
        assert "automounter" not in result.stages()
        assert not result.events("automounter_started")
        image = f"{job.repository}:host-{mode}"
        assert job.bed.docker("run", "--rm", image, BINARY).stdout.strip() == EXPECTED


def test_init_build_script_produces_a_working_image(job):
    (job.project / ".gitlab" / "build.sh").unlink()
    done = job.run("init", "--base-image", job.bed["LWC_TESTBED_CMS_BASE"])
    assert done.returncode == 0, done.stderr
    result = job.run(CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-3000:]
    image = f"{job.repository}:c0ffee12"
    ran = job.bed.docker("run", "--rm", image,
                         "CMSSW_10_6_8_patch1/bin/slc7_amd64_gcc820/myanalysis")
    assert ran.stdout.strip() == EXPECTED
    assert (job.project / "MyAnalysis").is_dir()  # init's script copies, the checkout stays


def test_long_waits_are_never_silent(job):
    slow = job.env()["LWC_AUTOMOUNTER_OPTIONS"].replace("DELAY=0.5", "DELAY=2")
    result = job.run(LWC_AUTOMOUNTER_OPTIONS=slow, LWC_PROGRESS_INTERVAL="0.3", CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-2000:]
    waiting = [r for r in result.events("waiting") if r.get("stage") == "cvmfs"]
    assert len(waiting) >= 3
    assert [r["elapsed_s"] for r in waiting] == sorted(r["elapsed_s"] for r in waiting)


def test_run_without_a_build_names_the_missing_image_at_once(job):
    # No report here and TO names nothing built: said at once, before any CVMFS is set up
    # (it used to read "CVMFS not available in time", exit 5, after the probe failed to pull).
    missing = job.run("run", "--", "true", CI_REGISTRY=None)
    assert missing.returncode == 2, missing.stderr[-2000:]
    failed = missing.events("failed")
    assert failed and "is not in the engine: build it first" in failed[-1]["error"]
    assert not missing.events("cvmfs_source") and job.containers() == []


def test_a_docker_context_reaches_the_same_engine_through_the_private_login(job):
    """The user's docker picks the bed's engine by a context (no DOCKER_HOST): the run's
    private config (a registry is set) reaches the same engine, by DOCKER_CONTEXT and by the
    config's currentContext; the choice's answer stands. The user's contexts are left as
    they were."""
    config = job.home / ".docker"
    context = f"lwc-bed-{job.token}"
    env = {k: v for k, v in job.env().items() if k != "DOCKER_HOST"}
    subprocess.run(["docker", "--config", str(config), "context", "create", context, "--docker",
                    f"host={job.bed['DOCKER_HOST']}"], env=env, check=True, capture_output=True)
    contexts = sorted(p.relative_to(config) for p in (config / "contexts").rglob("*"))
    (job.project / ".gitlab" / "build.sh").write_text("echo built > $HOME/marker\n")
    ref = f"{job.repository}:c0ffee12"

    named = job.run(DOCKER_HOST=None, DOCKER_CONTEXT=context, LWC_ENGINE="docker",
                    LWC_CVMFS="none", LWC_PUSH="never")
    assert named.returncode == 0, named.stderr[-3000:]
    assert "login" in named.stages()  # the private config was used
    assert job.bed.docker("run", "--rm", ref, "cat", "marker").stdout.strip() == "built"
    job.bed.docker("rmi", ref)

    (config / "config.json").write_text(json.dumps({"currentContext": context}))
    current = job.run(DOCKER_HOST=None, LWC_CVMFS="none", LWC_PUSH="never")
    assert current.returncode == 0, current.stderr[-3000:]
    assert current.events("engine_chosen")[0]["engine"] == "docker"
    assert current.events("engine_ready")[0].get("asked") == "by the choice"
    assert job.bed.docker("run", "--rm", ref, "cat", "marker").stdout.strip() == "built"
    assert sorted(p.relative_to(config) for p in (config / "contexts").rglob("*")) == contexts
