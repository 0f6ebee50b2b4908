"""Every fault ends clean, nothing is lost, no secret anywhere: on the real test bed."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values

from conftest import STANDIN_OPTIONS, Job, free_port, own_registry


def registry_env(registry: str, job: Job) -> dict[str, str]:
    """A fixed repository, so that the base layers pushed by an earlier run are not uploaded
    again; the tag is the job's own."""
    return {"CI_REGISTRY": registry, "CI_REGISTRY_IMAGE": f"{registry}/lwc-tests/own-registry",
            "CI_COMMIT_SHORT_SHA": f"job-{job.token}"}


class Watch:
    """Reads a running lwcontainer's stdout and stderr as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: [k.append(line) for line in s],
                             daemon=True).start()

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.out + self.err):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared:\n{''.join(self.err)[-3000:]}")

    def interrupt(self, sig: int, timeout: float = 20) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.err if line.startswith("{")]


# -- secrets -----------------------------------------------------------------------------------
def test_password_in_no_argv_no_log_no_image_and_no_login_left_behind(job):
    build = job.project / ".gitlab" / "build.sh"
    build.write_text("env | sort\n" + build.read_text())  # the build container's environment
    password = job.bed.password.encode()
    seen: list[str] = []
    stop = threading.Event()

    def sample_argv() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    data = cmdline.read_bytes()
                except OSError:
                    continue
                if password in data:
                    seen.append(data.decode(errors="replace"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample_argv, daemon=True)
    sampler.start()
    try:
        result = job.run()
    finally:
        stop.set()
        sampler.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen == []
    assert job.bed.password not in result.stdout + result.stderr
    assert "CI_JOB_TOKEN" not in result.stdout  # nothing of CI reached the build container
    image = f"{job.repository}:c0ffee12"
    inspect = job.bed.docker("image", "inspect", image).stdout
    history = job.bed.docker("history", "--no-trunc", image).stdout
    assert job.bed.password not in inspect + history
    config = job.home / ".docker" / "config.json"
    assert not config.exists() or job.bed["LWC_TESTBED_REGISTRY"] not in config.read_text()
    assert result.events("login_discarded")


def test_keep_login_leaves_the_login_in_the_users_config(job):
    result = job.run("push", LWC_KEEP_LOGIN="1", FROM=None,
                     TO=f"{job.repository}:none")  # fails after login: the image is not built
    assert result.returncode == 2  # TO is not in the engine
    login = job.run("login")
    assert login.returncode == 0
    config = json.loads((job.home / ".docker" / "config.json").read_text())
    assert job.bed["LWC_TESTBED_REGISTRY"] in config["auths"]


def test_only_the_automounter_has_privileges(job):
    built = job.run("build")
    assert built.returncode == 0, built.stderr[-2000:]
    container = dotenv_values(job.project / "lwcontainer.env")["LWC_BUILD_CONTAINER"]
    host = json.loads(job.bed.docker("container", "inspect", container).stdout)[0]["HostConfig"]
    assert host["Privileged"] is False and not host["CapAdd"]
    assert host["SecurityOpt"] is None


# -- stale mounts ------------------------------------------------------------------------------
@pytest.mark.parametrize("leftover", ["mount", "empty-directory"])
def test_leftovers_of_a_dead_automounter_are_not_trusted(job, tmp_path, leftover):
    repo_dir = job.mounts / "cvmfs" / "cms.cern.ch"
    started = job.run("automount", LWC_KEEP_AUTOMOUNTER="1")
    assert started.returncode == 0, started.stderr[-2000:]
    leases = job.bed.docker("ps", "--all", "--quiet", "--filter", "label=lwcontainer.role=build",
                            "--filter", f"name={job.automounter}-lease-")
    assert leases.stdout.split() == []  # none left: it would say forever that it is in use
    job.bed.docker("kill", job.automounter)  # SIGKILL: it cannot unmount
    assert job.leftover_mounts() == [str(repo_dir)]
    # Make the leftover wrong, so that trusting it breaks the build.
    subprocess.run(["umount", "-l", str(repo_dir)], check=True)
    if leftover == "mount":
        decoy = tmp_path / "decoy"
        decoy.mkdir()
        (decoy / "STALE").write_text("left by a dead automounter\n")
        subprocess.run(["mount", "--bind", str(decoy), str(repo_dir)], check=True)
    slow = f"{STANDIN_OPTIONS} -e LWC_STANDIN_DELAY=2"
    result = job.run(LWC_AUTOMOUNTER_OPTIONS=slow)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.events("automounter_replaced")[0]["status"] == "exited"
    if leftover == "mount":
        removed = result.events("stale_mounts_removed")[0]["mounts"]
        assert removed == ["/cvmfsmounts/cvmfs/cms.cern.ch"]
    assert ">> Done building" in result.stdout
    assert job.leftover_mounts() == []


# -- push failures -----------------------------------------------------------------------------
def test_refused_push_keeps_the_image_and_push_finishes_later(job, tmp_path):
    port = free_port()
    env = registry_env(f"127.0.0.1:{port}", job)
    target = f"{env['CI_REGISTRY_IMAGE']}:job-{job.token}"
    with own_registry(job, tmp_path, port, readonly=True):
        failed = job.run(**env, LWC_PUSH_RETRIES="2")
    assert failed.returncode == 8, failed.stderr[-3000:]
    assert len(failed.events("retry")) == 2
    message = failed.events("failed")[-1]["error"]
    assert "lwcontainer push" in message and target in message
    assert job.bed.docker("image", "inspect", target).returncode == 0
    assert dotenv_values(job.project / "lwcontainer.env")["LWC_IMAGE_DIGEST"] == ""

    with own_registry(job, tmp_path, port, readonly=False):
        pushed = job.run("push", **env)
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        report = dotenv_values(job.project / "lwcontainer.env")
        digest = report["LWC_IMAGE_DIGEST"]
        assert digest.startswith(f"{env['CI_REGISTRY_IMAGE']}@sha256:")
        assert int(report["LWC_LAYER_SIZE"]) > 0  # carried over from the failed run's report
        manifest = subprocess.run(
            ["curl", "-sf", "-u", f"{job.bed['LWC_TESTBED_USER']}:{job.bed.password}",
             "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json", "-o",
             "/dev/null", "-w", "%{http_code}",
             f"http://127.0.0.1:{port}/v2/lwc-tests/own-registry/manifests/job-{job.token}"],
            capture_output=True, text=True)
        assert manifest.stdout == "200"
    job.bed.docker("rmi", "-f", target, check=False)


# -- signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_build_cleans_up_and_exits_130(job, sig):
    (job.project / ".gitlab" / "build.sh").write_text("echo BUILD-STARTED; sleep 120\n")
    watch = Watch(job.popen())
    watch.wait_for("BUILD-STARTED")
    code, elapsed = watch.interrupt(sig)
    assert code == 130, "".join(watch.err)[-3000:]
    assert elapsed < 15
    assert job.containers() == []  # build container removed, automounter stopped
    assert job.leftover_mounts() == []
    assert not (job.project / "lwcontainer.env").exists()
    assert any(r["event"] == "interrupted" for r in watch.records())


def test_sigkill_leaves_no_docker_process_and_the_next_run_removes_the_login(job):
    """SIGKILL cannot be cleaned up after, but the docker clients it started die with it
    (setpriv --pdeathsig), and its private config, which holds the login, goes with the next
    run."""
    (job.project / ".gitlab" / "build.sh").write_text("echo BUILD-STARTED; sleep 120\n")
    watch = Watch(job.popen())
    watch.wait_for("BUILD-STARTED")
    children = subprocess.run(["pgrep", "-P", str(watch.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children, "the build's docker client runs as a child"
    leftover = sorted(Path(tempfile.gettempdir()).glob(f"lwc-docker-config-{watch.proc.pid}-*"))
    assert leftover, "the run logs in to a private config"
    watch.proc.kill()
    watch.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    for name in job.containers():  # the engine's containers outlive a SIGKILL: the test's job
        job.bed.docker("rm", "-f", name, check=False)
    job.fresh_checkout()
    again = job.run()
    assert again.returncode == 0, again.stderr[-2000:]
    assert not any(path.exists() for path in leftover)


def test_signal_during_push_exits_130_and_reports_nothing_pushed(job, tmp_path):
    port = free_port()
    env = registry_env(f"127.0.0.1:{port}", job)
    with own_registry(job, tmp_path, port, readonly=True):
        watch = Watch(job.popen(**env, LWC_PUSH_RETRIES="5"))
        watch.wait_for('"event": "retry"')
        code, elapsed = watch.interrupt(signal.SIGTERM)
    assert code == 130 and elapsed < 10
    assert not any(r["event"] == "pushed" for r in watch.records())
    assert not (job.project / "lwcontainer.env").exists()
    assert job.containers() == []
    job.bed.docker("rmi", "-f", f"{env['CI_REGISTRY_IMAGE']}:job-{job.token}", check=False)


def test_signal_during_pull_exits_130(job):
    """A registry that accepts connections and never answers: the pull hangs until SIGTERM."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        watch = Watch(job.popen(FROM=f"127.0.0.1:{port}/cms/base:1", LWC_PULL="always"))
        watch.wait_for('"stage": "pull"')
        time.sleep(0.5)
        code, elapsed = watch.interrupt(signal.SIGTERM)
    finally:
        silent.close()
    assert code == 130 and elapsed < 10
    assert job.containers() == []


# -- concurrency -------------------------------------------------------------------------------
def test_four_pipelines_at_once_share_one_automounter(job, testbed, tmp_path):
    jobs = [job] + [Job(testbed, tmp_path / f"run{i}") for i in range(1, 4)]
    shared = {"LWC_CVMFS_MOUNTS": str(job.mounts), "LWC_AUTOMOUNTER_NAME": job.automounter,
              "CI_PROJECT_NAME": f"t{job.token}", "CI_REGISTRY_IMAGE": job.repository}
    try:
        watches = [Watch(j.popen(**shared, CI_COMMIT_SHORT_SHA=f"run{i}"))
                   for i, j in enumerate(jobs)]
        codes = [w.proc.wait(timeout=300) for w in watches]
        records = [w.records() for w in watches]
        assert codes == [0, 0, 0, 0], ["".join(w.err)[-1500:] for w in watches]
        started = [r for rs in records for r in rs if r["event"] == "automounter_started"]
        reused = [r for rs in records for r in rs if r["event"] == "automounter_reused"]
        assert len(started) == 1 and len(reused) == 3
        names = {r["container"] for rs in records for r in rs
                 if r["event"] == "build_container_removed"}
        assert len(names) == 4
        for i in range(4):
            assert job.bed.docker("image", "inspect", f"{job.repository}:run{i}").returncode == 0
    finally:
        for other in jobs[1:]:
            other.cleanup()
