"""Issue 17 on the real test bed: what a build (or a killed run) leaves cannot steer the next."""
from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

from test_reliability_e2e import Watch
from test_trust import git_repository


def quick_build(job, script: str) -> None:
    """A build script of a few shell lines (no CVMFS, no push: the finding is the engine's)."""
    (job.project / ".gitlab" / "build.sh").write_text(script)


QUICK = dict(LWC_CVMFS="none", CI_REGISTRY=None, LWC_PUSH="never")


def test_m7_the_build_cannot_write_the_checkouts_git(job):
    git_repository(job.project)
    config = job.project / ".git" / "config"
    config.write_text(config.read_text().replace("\tfsmonitor", "\t#fsmonitor"))
    subprocess.run(["chmod", "-R", "a+rwX", str(job.project / ".git")], check=True)  # umask 0
    before = config.read_text()
    marker = job.root / "monitor-ran"
    quick_build(job, f"""printf '[core]\\n\\tfsmonitor = touch {marker} #\\n' >> .git/config \\
  && echo GIT-WRITTEN || echo GIT-READ-ONLY
touch .git/hooks/planted 2>/dev/null && echo HOOK-WRITTEN || echo HOOK-READ-ONLY
echo built > artifact.txt
""")
    result = job.run(**QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GIT-READ-ONLY" in result.stdout and "HOOK-READ-ONLY" in result.stdout
    assert (job.project / "artifact.txt").read_text() == "built\n"  # the rest stays writable
    assert config.read_text() == before
    # The user's own git afterwards runs nothing the build planted.
    subprocess.run(["git", "-c", "safe.directory=*", "-C", str(job.project), "status"],
                   capture_output=True, check=True)
    assert not marker.exists()


def test_orphans_a_sigkilled_runs_build_container_is_removed_by_the_next_run(job):
    quick_build(job, "echo build-started\nsleep 600\n")
    proc = job.popen(CI_REGISTRY=None, LWC_PUSH="never")
    watch = Watch(proc)
    try:
        watch.wait_for("build-started")
        deadline = time.monotonic() + 20  # its world-writable check is made meanwhile
        while not any(n.endswith("-modes") for n in job.containers()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=20)
    # The killed run's world-writable check container, waiting on its stdin, ends with the
    # run's docker client (its stdin ends; --rm); its build container is left, still running.
    deadline = time.monotonic() + 15
    while any(n.endswith("-modes") for n in job.containers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = sorted(name for name in job.containers() if name != job.automounter)
    assert len(left) == 1 and left[0].startswith("lwc-"), job.containers()
    # The next run starts its own automounter, builds, and at the end stops it: the orphan
    # is gone (removed at the start) and does not count as a build in progress.
    job.bed.docker("rm", "-f", job.automounter)
    quick_build(job, "echo second\n")
    result = job.run(CI_REGISTRY=None, LWC_PUSH="never")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(event["container"] for event in result.events("orphan_removed")) == left
    assert result.events("automounter_stopped") and not result.events("automounter_kept")
    assert job.containers() == []


def registry_tags(job, repository: str) -> list[str]:
    registry = job.bed["LWC_TESTBED_REGISTRY"]
    request = urllib.request.Request(f"http://{registry}/v2/{repository}/tags/list")
    pair = base64.b64encode(f"{job.bed['LWC_TESTBED_USER']}:{job.bed.password}".encode())
    request.add_header("Authorization", f"Basic {pair.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def test_m4_a_checkout_env_that_names_another_repository_pushes_nothing(job):
    victim = f"lwc-tests/victim-{job.token}"
    registry = job.bed["LWC_TESTBED_REGISTRY"]
    (job.project / ".env").write_text(f"TO={registry}/{victim}:latest\n")
    quick_build(job, "echo built\n")
    result = job.run(LWC_CVMFS="none")
    assert result.returncode == 2, result.stderr[-3000:]
    failed = result.events("failed")[0]["error"]
    assert failed.startswith("TO: ") and "CI_REGISTRY_IMAGE" in failed
    assert not result.events("stage_start")  # refused before the engine is touched
    assert registry_tags(job, victim) == []
