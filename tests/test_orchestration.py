"""The orchestration and the docker engine's stages, with a recording fake executor that returns
scripted results: order, overlap, cleanup on each failure path, and the dry-run plan. No
process runs here; the end-to-end suites prove the same on the real engine."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pytest
import structlog.testing

from lwcontainer import pipeline, signals
from lwcontainer.config.settings import Settings
from lwcontainer.engines.docker import commands, modes
from lwcontainer.engines.docker.engine import DockerEngine
from lwcontainer.errors import (BuildError, CvmfsError, ExitCode, Interrupted, LoginError,
                                PushError)
from lwcontainer.executor import Completed, DryRunExecutor, Executor, Step
from lwcontainer.output import logs
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Image, Stages

BASE = [{"Id": "sha256:base", "Size": 1000, "RepoDigests": ["r.io/cms/base@sha256:" + "b" * 64],
         "Config": {"Cmd": ["/bin/bash"], "WorkingDir": "/home/cmsusr", "User": "cmsusr"}}]


class Recorder(Executor):
    """Answers each docker argv from a script (first matching prefix wins) and records it,
    with the thread it ran on."""

    def __init__(self, answers: dict[tuple[str, ...], Completed]) -> None:
        super().__init__(Masker(["hunter2"]), backoff=0, out=io.StringIO(), err=io.StringIO())
        self.answers = answers
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.lock = threading.Lock()

    def run(self, step: Step) -> Completed:
        with self.lock:
            self.calls.append((step.argv, threading.current_thread().name))
        if isinstance(step.stdin, Future):  # gated: waits, as the child would; then says so
            while not step.stdin.done():
                time.sleep(0.01)
            if step.stdin.cancelled():  # its stdin ended: it reads nothing and exits
                with self.lock:
                    self.calls.append((ENDED + step.argv[-1:], threading.current_thread().name))
                return Completed(0, "", "")
            with self.lock:
                self.calls.append((RELEASED + step.argv[-1:], threading.current_thread().name))
        for prefix, done in self.answers.items():
            if step.argv[:len(prefix)] == prefix:
                if step.on_line:
                    for line in done.stdout.splitlines():
                        step.on_line(line)
                if not done.ok and step.check:
                    raise step.error(f"{step.what} failed: {done.stderr}")
                return done
        return Completed(0, "", "")

    def argvs(self) -> list[str]:
        return [" ".join(argv[:2]) for argv, _ in self.calls]

    def ran(self, *prefix: str) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls if argv[:len(prefix)] == prefix]


def name_of(argv: tuple[str, ...]) -> str:
    return argv[argv.index("--name") + 1]


def leases(x: Recorder) -> list[tuple[str, ...]]:
    """The lease containers' creates (the automounter of these tests is named cvmfs)."""
    return [argv for argv in x.ran("create") if name_of(argv).startswith("cvmfs-lease-")]


RELEASED = ("<released>",)  # recorded when a gated step's stdin is given
ENDED = ("<ended>",)  # recorded when a gated step's stdin ends without it


def ok(stdout: str = "") -> Completed:
    return Completed(0, stdout, "")


def failed(stderr: str, rc: int = 1) -> Completed:
    return Completed(rc, "", stderr)


def answers(**changes: Completed) -> dict[tuple[str, ...], Completed]:
    script = {
        ("version",): ok("24.0.7\n"),
        ("image", "inspect", "sha256:new"): ok(json.dumps([{
            "Id": "sha256:new", "Size": 1500,
            "RepoDigests": ["r.io/other@sha256:" + "c" * 64, "r.io/me/ana@sha256:" + "d" * 64]}])),
        ("image", "inspect"): ok(json.dumps(BASE)),
        ("container", "inspect"): failed("No such container"),
        ("run", "--rm", "--name"): ok(commands.READY_MARK + "\n"),
        ("commit",): ok("sha256:new\n"),
        ("push",): ok("one: digest: sha256:" + "d" * 64 + " size: 1\n"),
        ("ps",): ok(""),
    }
    for key, value in changes.items():
        script[tuple(key.split("_"))] = value
    return dict(sorted(script.items(), key=lambda kv: -len(kv[0])))


@pytest.fixture
def settings(tmp_path: Path):
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")

    def make(**env: str) -> Settings:
        base = {"FROM": "r.io/cms/base:1", "HOME": str(tmp_path), "LWC_CVMFS": "automounter",
                "CI_REGISTRY": "r.io", "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "hunter2",
                "CI_REGISTRY_IMAGE": "r.io/me/ana", "CI_COMMIT_SHORT_SHA": "abc12345"}
        return Settings.from_mapping({**base, **env}, cwd=tmp_path)
    return make


def engine_for(settings: Settings, executor: Executor) -> tuple[DockerEngine, Stages]:
    stages = Stages(settings, executor.masker, executor.out)
    return DockerEngine(settings, executor, stages, {"PATH": "/bin"},
                        local_socket=Path("/nonexistent")), stages


def whole_job(settings: Settings, executor: Executor):
    engine, stages = engine_for(settings, executor)
    return pipeline.whole_job(engine, stages, settings, executor.dry_run)


def test_whole_job_runs_the_stages_in_order_and_overlaps_login_and_pull(settings):
    x = Recorder(answers())
    image = whole_job(settings(LWC_EXTRA_TAGS="v1"), x)
    assert (image.id, image.layer_size) == ("sha256:new", 500)
    assert dict(image.details) == {"LWC_CVMFS_SOURCE": "automounter"}
    order = x.argvs()
    assert order.index("version --format") < order.index("login --username")
    assert order.index("start --attach") < order.index("commit --change")
    assert x.ran("commit")[0][-1] == "r.io/me/ana:abc12345"  # the commit names TO
    assert x.ran("tag") == [("tag", "sha256:new", "r.io/me/ana:v1")]  # the others, tagged
    assert order.index("commit --change") < order.index("tag sha256:new") < order.index(
        "push r.io/me/ana:abc12345") < order.index("push r.io/me/ana:v1")
    # login and the base inspection ran on the background thread, the build on the main one
    threads = {argv[0]: thread for argv, thread in x.calls}
    builds = [thread for argv, thread in x.calls if argv[:2] == ("start", "--attach")
              and "--interactive" not in argv]
    assert threads["login"].startswith("lwc-docker") and builds == ["MainThread"]
    # the digest as the engine recorded it for TO's repository (RepoDigests), not another's
    assert f"LWC_IMAGE_DIGEST=r.io/me/ana@sha256:{'d' * 64}" in settings().report.read_text()


def test_the_digest_is_the_one_tos_push_printed_for_its_tag(settings):
    e = "e" * 64
    said = ("The push refers to repository [r.io/me/ana]\n"
            f"v1: digest: sha256:{'f' * 64} size: 9\n"  # another tag's line is not TO's
            f"abc12345: digest: sha256:{e} size: 12\n")
    x = Recorder(answers(push=ok(said)))
    whole_job(settings(), x)
    assert f"LWC_IMAGE_DIGEST=r.io/me/ana@sha256:{e}\n" in settings().report.read_text()
    # the commit's own inspection (its layer size) only: no call after the push for the digest
    assert x.ran("image", "inspect", "sha256:new") == [("image", "inspect", "sha256:new")]


def test_the_build_container_checks_cvmfs_itself_no_probe_container(settings):
    x = Recorder(answers())
    whole_job(settings(), x)
    created = [(argv, t) for argv, t in x.calls if argv[:1] == ("create",)
               and "r.io/cms/base:1" in argv]
    assert created and all(t == "MainThread" for _, t in created)
    argv = created[0][0]
    assert argv[argv.index("r.io/cms/base:1") + 1:][:3] == ("/bin/bash", "-c",
                                                           commands.CHECK_THEN_EXEC)
    assert argv[-5:] == ("300", "1", "cms.cern.ch", "/bin/bash", "./.gitlab/build.sh")
    assert not x.ran("run", "--rm"), "no separate probe container"


RUNNING = ok(json.dumps([{"Id": "c" * 64, "State": {"Status": "running"}}]))


def test_cvmfs_missing_in_the_build_container_is_the_cvmfs_error(settings):
    missing = failed(f"{commands.CVMFS_MISSING} cms.cern.ch\n", rc=commands.CVMFS_MISSING_EXIT)
    x = Recorder(answers(**{"start_--attach": missing, "container_inspect": RUNNING}))
    with pytest.raises(CvmfsError) as raised:
        whole_job(settings(LWC_CVMFS_TIMEOUT="7"), x)
    assert raised.value.exit_code == ExitCode.CVMFS
    assert str(raised.value).startswith("CVMFS repositories not mounted after 7s "
                                        "(LWC_CVMFS_TIMEOUT): cms.cern.ch;")
    assert not x.ran("commit")


def test_a_build_script_exiting_with_the_check_s_code_is_still_a_build_failure(settings):
    x = Recorder(answers(**{"start_--attach": failed("make: *** Error", rc=97),
                            "container_inspect": RUNNING}))
    with pytest.raises(BuildError, match="exited with code 97"):
        whole_job(settings(), x)


class SlowPull(Recorder):
    """FROM is not in the engine; its pull takes ``seconds``."""

    def __init__(self, seconds: float, **changes: Completed) -> None:
        super().__init__(answers(**{"image_inspect_r.io/cms/base:1": failed("No such image"),
                                    "container_inspect": RUNNING, **changes}))
        self.seconds = seconds

    def run(self, step: Step) -> Completed:
        done = super().run(step)
        if step.argv[:1] == ("pull",):
            time.sleep(self.seconds)
        return done


class Mounting(SlowPull):
    """The automounter lists a repository as missing until it has been looked into twice."""

    def __init__(self, seconds: float, **changes: Completed) -> None:
        super().__init__(seconds, **changes)
        self.looks = 0

    def run(self, step: Step) -> Completed:
        if step.argv[:1] == ("exec",):
            super().run(step)
            self.looks += 1
            return ok("cms.cern.ch\n" if self.looks < 3 else "")
        return super().run(step)


def test_while_the_base_is_pulled_the_automounter_is_looked_into_until_it_has_mounted(
        settings):
    """Looking is what makes an on-demand automounter mount: it goes on during the pull, and
    stops once every repository is there (the pull still running)."""
    x = Mounting(3)
    whole_job(settings(), x)
    calls = [argv for argv, _ in x.calls]
    pulled = max(i for i, argv in enumerate(calls) if argv == ("image", "inspect",
                                                             "r.io/cms/base:1"))
    looks = [i for i, argv in enumerate(calls) if argv[:1] == ("exec",)]
    assert len(looks) == 3 and max(looks) < pulled  # (FROM is inspected again once pulled)


class LongLook(SlowPull):
    """A look inside the automounter that goes on (as one does until its seconds pass) until
    the build container starts; what it saw is kept."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.built = threading.Event()
        self.outlasted: list[bool] = []

    def run(self, step: Step) -> Completed:
        if step.argv[:2] == ("start", "--attach"):
            self.built.set()
        if step.argv[:1] == ("exec",):
            super().run(step)
            self.outlasted.append(self.built.wait(10))
            return ok(commands.READY_MARK + "\n")
        return super().run(step)


def test_a_look_still_running_when_the_pull_is_done_does_not_hold_the_build(settings):
    """One process looks inside the automounter, for seconds at a time: once the pull is done,
    the build container's own check takes over, the look is not waited for."""
    x = LongLook(0.3)
    whole_job(settings(), x)
    assert x.outlasted == [True]
    look = x.ran("exec")[0]
    assert look[look.index("look") + 1] == "5" and "0.1" in look[look.index("-c") + 1]


def test_the_lease_is_taken_beside_the_automounter_start_and_ended_once_the_build_runs(
        settings):
    """Before the pull has written anything (a create flushes the engine's file system), and
    gone once the build container marks the automounter as in use."""
    x = SlowPull(0.3)
    whole_job(settings(), x)
    calls = [argv for argv, _ in x.calls]
    lease = leases(x)[0]
    assert dict(x.calls)[lease].startswith("lwc-automounter")  # beside the inspects
    build = next(argv for argv in x.ran("create") if argv is not lease)
    removed = x.ran("rm", "--force", "--volumes", lease[lease.index("--name") + 1])
    pulled = max(i for i, argv in enumerate(calls) if argv == ("image", "inspect",
                                                             "r.io/cms/base:1"))
    assert calls.index(lease) < pulled  # (FROM is inspected again once pulled)
    assert calls.index(build) < calls.index(x.ran("start", "--attach")[0]) < calls.index(removed[0])


class Running(SlowPull):
    """The build container says it runs (its first line) and goes on until the lease is gone
    and the layer check made (or 5 s): what those waited for is kept."""

    def __init__(self) -> None:
        super().__init__(0.1, container_inspect=RUNNING, **{
            "container_inspect_--format": ok(json.dumps({"Name": "overlay2", "Data": {
                "UpperDir": "/var/lib/docker/o/1/diff"}}))})
        self.before_start: list[str] = []
        self.while_running: list[str] = []

    def run(self, step: Step) -> Completed:
        if step.argv[:1] == ("create",) and "-modes" in " ".join(step.argv) or \
                step.argv[:1] == ("rm",) and step.argv[-1].startswith("cvmfs-lease-"):
            (self.while_running if self.ran("start", "--attach") else self.before_start).append(
                step.argv[0])
        if step.argv[:2] == ("start", "--attach") and "--interactive" not in step.argv:
            super().run(step)
            step.observe(f"{commands.CVMFS_CHECKING} cms.cern.ch\n")
            for _ in range(500):
                if len(self.while_running) == 2:
                    break
                time.sleep(0.01)
            return ok()
        return super().run(step)


class SilentlyStopped(Recorder):
    """The build container's start is cut short (a signal) before it has said a word."""

    def run(self, step: Step) -> Completed:
        if step.argv[:2] == ("start", "--attach") and "--interactive" not in step.argv:
            super().run(step)
            raise Interrupted("SIGTERM")
        return super().run(step)


def test_a_build_stopped_before_its_first_line_leaves_nothing_waiting(settings):
    """What waits for the build container to run (the lease's removal, the layer check) is
    let go when it never says so: the run ends, and no thread of its pool is left blocked."""
    x = SilentlyStopped(answers(**{"container_inspect_--format": ok(json.dumps({
        "Name": "overlay2", "Data": {"UpperDir": "/var/lib/docker/o/1/diff"}}))}))
    with pytest.raises(Interrupted):
        whole_job(settings(), x)
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name.startswith("lwc-docker")]:
            break
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("lwc-docker")]
    assert leases(x) and x.ran("rm", "--force", "--volumes", name_of(leases(x)[0]))


def test_the_lease_goes_and_the_layer_check_comes_once_the_build_container_runs(settings):
    """Neither is on the way of the build container's own start (both ask the engine for
    work at the same time); both are done while it runs."""
    x = Running()
    whole_job(settings(), x)
    assert x.before_start == [] and sorted(x.while_running) == ["create", "rm"]


class MissingAutomounterImage(Recorder):
    """The automounter's image is not in the engine until it is pulled."""

    def __init__(self, status: str = "") -> None:
        super().__init__(answers())
        self.status = status  # of the automounter's name when first seen; then running
        self.pulled = False
        self.leased_before_pull: list[tuple[str, ...]] = []

    def run(self, step: Step) -> Completed:
        if step.argv == ("container", "inspect", "cvmfs") and self.status:
            seen = self.ran("container", "inspect", "cvmfs")
            super().run(step)
            return ok(json.dumps([{"Id": "a" * 64, "Image": "sha256:" + "e" * 64, "State": {
                "Status": self.status if not seen else "running"}}]))
        if step.argv[:2] == ("image", "inspect") and "automounter" in step.argv[-1]:
            super().run(step)
            return ok(json.dumps(BASE)) if self.pulled else failed("No such image")
        if step.argv[:1] == ("pull",) and "automounter" in step.argv[-1]:
            self.pulled = True
        if step.argv[:1] == ("create",) and name_of(step.argv).startswith("cvmfs-lease-") \
                and not self.pulled and step.argv[-1].endswith(":master"):
            self.leased_before_pull.append(step.argv)  # its create would pull the image
        return super().run(step)


def test_with_the_automounter_image_missing_the_lease_waits_for_its_pull(settings):
    x = MissingAutomounterImage()
    whole_job(settings(), x)
    assert len(leases(x)) == 1 and not x.leased_before_pull


@pytest.mark.parametrize("status", ["running", "created"])  # created: another run starts it
def test_a_reused_automounter_whose_image_tag_is_gone_is_leased_by_its_image_id(settings,
                                                                                 status):
    x = MissingAutomounterImage(status)
    whole_job(settings(), x)
    assert [a[-1] for a in leases(x)] == ["sha256:" + "e" * 64]
    assert not [a for a in x.ran("pull") if "automounter" in a[-1]]


def test_automount_alone_takes_no_lease(settings):
    """'lwcontainer automount' leaves the automounter running and no build follows: a lease
    would say forever that it is in use."""
    from lwcontainer.engines.docker import subcommands
    x = Recorder(answers())
    engine, _ = engine_for(settings(), x)
    subcommands.automount(engine)
    assert x.ran("run", "--detach") and not leases(x)


def test_an_automounter_that_dies_while_the_base_is_pulled_fails_at_once(settings):
    x = SlowPull(6, exec=failed("Error response from daemon: container is not running"),
                 container_inspect=ok(json.dumps([{"Id": "a" * 64,
                                                   "State": {"Status": "exited"}}])))
    started = time.monotonic()
    with pytest.raises(CvmfsError, match="automounter cvmfs is exited"):
        whole_job(settings(), x)
    assert time.monotonic() - started < 5  # not after the pull


def test_cvmfs_missing_when_the_timeout_comes_during_the_pull_fails_then(settings):
    x = SlowPull(6, exec=ok("cms.cern.ch\n"))  # the automounter lists what is missing
    started = time.monotonic()
    with pytest.raises(CvmfsError, match=r"not mounted after 2s \(LWC_CVMFS_TIMEOUT\): "
                                         "cms.cern.ch"):
        whole_job(settings(LWC_CVMFS_TIMEOUT="2"), x)
    assert time.monotonic() - started < 5


class DyingAutomounter(Recorder):
    """The build waits in its first step until something kills it; the automounter it waits
    for is gone."""

    def __init__(self) -> None:
        super().__init__(answers(**{"exec": failed("container is not running")}))
        self.killed = threading.Event()

    def run(self, step: Step) -> Completed:
        if step.argv[:1] == ("kill",):
            self.killed.set()
        if step.argv[:2] == ("start", "--attach"):
            super().run(step)
            return ok() if not self.killed.wait(10) else failed("", rc=137)
        return super().run(step)


@pytest.mark.parametrize("seen, said", [
    (failed("Error: No such container: cvmfs"), "is gone"),
    (ok(json.dumps([{"Id": "a" * 64, "State": {"Status": "exited"}}])), "is exited")])
def test_an_automounter_that_dies_while_the_build_waits_stops_the_build(settings, seen, said):
    x = DyingAutomounter()
    x.answers[("container", "inspect")] = seen
    with pytest.raises(CvmfsError, match=f"automounter cvmfs {said}"):
        whole_job(settings(), x)
    assert x.killed.is_set() and x.ran("kill", build_container(x))
    assert not x.ran("commit")


class ReadyBuild(Recorder):
    """The build container says CVMFS is ready at once, then builds for a while."""

    def run(self, step: Step) -> Completed:
        if step.argv[:2] == ("start", "--attach"):
            super().run(step)
            step.observe(f"{commands.CVMFS_READY} cms.cern.ch\n")
            time.sleep(1.5)
            return ok()
        return super().run(step)


def test_the_cvmfs_watch_ends_on_the_build_containers_ready_line(settings):
    """No look at the automounter once the build says CVMFS is there, and none into it."""
    x = ReadyBuild(answers(**{"container_inspect": ok(json.dumps(
        [{"Id": "a" * 64, "State": {"Status": "running"}}]))}))
    whole_job(settings(), x)
    calls = [argv for argv, _ in x.calls]
    during = calls[calls.index(("start", "--attach", build_container(x))):
                   calls.index(x.ran("commit")[0])]
    assert [argv for argv in during if argv[:2] == ("container", "inspect")
            and argv[-1] == "cvmfs"] == []  # the automounter's name
    assert not [argv for argv in during if argv[:1] == ("exec",)]


class SlowBuild(Recorder):
    """The build waits in its first step a while (no ready line), then succeeds."""

    def run(self, step: Step) -> Completed:
        if step.argv[:2] == ("start", "--attach") and "-modes" not in step.argv[-1]:
            super().run(step)
            time.sleep(1.2)
            return ok()
        return super().run(step)


def test_an_engine_that_does_not_answer_once_does_not_kill_the_build(settings):
    """Only an automounter the engine says is gone or stopped ends the build's wait."""
    x = SlowBuild(answers(**{"container_inspect": failed("error during connect: i/o timeout")}))
    whole_job(settings(), x)
    assert not x.ran("kill") and x.ran("commit")


OVERLAY = json.dumps({"Name": "overlay2", "Data": {"UpperDir": "/var/lib/docker/o/1/diff"}})


def test_the_layer_check_runs_after_the_build_and_names_what_it_found(settings):
    found = f"./home/cmsusr/f\0{modes.END}0\n"
    x = Recorder(answers(**{"container_inspect_--format": ok(OVERLAY),
                            "start_--attach": ok(found)}))
    with structlog.testing.capture_logs() as logs:
        whole_job(settings(), x)
    build = build_container(x)
    calls = [argv for argv, _ in x.calls]
    assert x.ran("start", "--attach", "--interactive", f"{build}-modes")  # parked meanwhile
    assert calls.index((*RELEASED, f"{build}-modes")) > calls.index(
        ("start", "--attach", build))  # and reads the layer once the build has succeeded
    warned = [e for e in logs if e["event"] == "world_writable"]
    assert warned[0]["paths"] == ["/home/cmsusr/f"] and not x.ran("diff")


def test_a_failed_builds_layer_check_ends_before_the_build_container_is_removed(settings):
    x = Recorder(answers(**{"container_inspect_--format": ok(OVERLAY),
                            "start_--attach": failed("boom", rc=3)}))
    with pytest.raises(BuildError):
        whole_job(settings(), x)
    build = build_container(x)
    calls = [argv for argv, _ in x.calls]
    # its stdin ends, and it exits (--rm) before the build container it reads is removed
    assert calls.index((*ENDED, f"{build}-modes")) < calls.index(
        ("rm", "--force", "--volumes", build))
    assert not x.ran(*RELEASED, f"{build}-modes")  # it never read the layer


@pytest.mark.parametrize("where,error", [
    ("start_--attach", BuildError), ("login", LoginError)])
def test_every_failure_removes_the_build_container_and_stops_the_automounter(settings, where,
                                                                            error):
    x = Recorder(answers(**{where: failed("unauthorized: no" if where == "login" else "boom",
                                          rc=3)}))
    with pytest.raises(error):
        whole_job(settings(), x)
    assert x.ran("stop", "--time", "10", "cvmfs"), "the automounter this run started is stopped"
    removed = {argv[-1] for argv in x.ran("rm", "--force")}
    builds = [argv for argv in x.ran("create", "--name") if "lwcontainer.role=build" in argv]
    assert all(argv[2] in removed for argv in builds)
    assert not x.ran("push")


def test_a_failed_push_keeps_the_image_and_still_writes_the_report(settings):
    x = Recorder(answers(push=failed("503 Service Unavailable")))
    s = settings(LWC_PUSH_RETRIES="0")
    with pytest.raises(PushError, match="lwcontainer push"):
        whole_job(s, x)
    report = s.report.read_text()
    assert "LWC_IMAGE_ID=sha256:new" in report and "LWC_IMAGE_DIGEST=\n" in report
    assert not x.ran("rmi")


def test_the_build_container_goes_once_it_has_served_the_rest_on_the_main_thread(settings):
    """Committed and its layer read, the build container is removed beside the push (once);
    the automounter is stopped after the push, on the main thread."""
    x = Recorder(answers(**{"container_inspect_--format": ok(OVERLAY),
                            "start_--attach": ok(f"{modes.END}0\n")}))
    whole_job(settings(), x)
    build = build_container(x)
    at = {argv: (i, t) for i, (argv, t) in enumerate(x.calls)}
    removal = [(i, t) for i, (argv, t) in enumerate(x.calls) if argv[:2] == ("rm", "--force")
               and argv[-1] == build]
    assert len(removal) == 1 and removal[0][1].startswith("lwc-measure")
    assert removal[0][0] > max(i for i, (argv, _) in enumerate(x.calls)
                               if argv[:1] == ("commit",) or argv[:1] == RELEASED)
    pushed = max(i for i, (argv, _) in enumerate(x.calls) if argv[:1] == ("push",))
    stop, thread = at[("stop", "--time", "10", "cvmfs")]
    assert stop > pushed and thread == "MainThread"


def build_container(x: Recorder) -> str:
    return next(argv[2] for argv in x.ran("create", "--name") if "r.io/cms/base:1" in argv)


class Signalling(Recorder):
    """Sends this process a signal while running the steps named, as a user's kill (or a
    dropped SSH session's SIGHUP) would land."""

    def __init__(self, answers, during: Callable[[tuple[str, ...]], bool],
                 signum: int = signal.SIGTERM) -> None:
        super().__init__(answers)
        self.during = during
        self.signum = signum

    def run(self, step: Step) -> Completed:
        done = super().run(step)
        if self.during(step.argv):
            os.kill(os.getpid(), self.signum)
            time.sleep(0.05)  # the handler runs in the main thread at its next bytecode
        return done


STOPPING = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.fixture
def handlers():
    """lwcontainer's own signal handlers, as main() installs them; the test runner's back after.
    A signal they leave alone is only noted, so one lwcontainer misses fails the test, not the
    run."""
    saved = {sig: signal.getsignal(sig) for sig in STOPPING}
    for sig in STOPPING:
        signal.signal(sig, lambda *_: None)
    signals.install()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_nohup_keeps_sighup_ignored_and_the_run_going():
    """A run started with nohup is to outlive its terminal: SIGHUP stays ignored, also while
    cleanup defers the others."""
    saved = {sig: signal.getsignal(sig) for sig in STOPPING}
    try:
        for sig in STOPPING:
            signal.signal(sig, lambda *_: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signals.install()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        with signals.deferred():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)  # nothing raised: the run goes on
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)  # the others still stop it
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("signum", STOPPING, ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_the_run_with_its_name(signum, handlers):
    with pytest.raises(Interrupted) as raised:
        os.kill(os.getpid(), signum)
        time.sleep(1)
    assert raised.value.signal_name == signal.Signals(signum).name


@pytest.mark.parametrize("signum", STOPPING, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_cleanup_is_held_until_it_is_done(signum, handlers):
    done = []
    with pytest.raises(Interrupted) as raised:
        with signals.deferred():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            done.append("cleanup")
    assert done == ["cleanup"] and raised.value.signal_name == signal.Signals(signum).name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_the_push_is_cleaned_up_after_on_the_main_thread(settings, handlers,
                                                                         signum):
    """A signal while pushing, and again while the build container is being removed: the second
    waits until cleanup is done (signals.deferred holds it on the main thread), so the
    automounter this run started is still stopped; nothing is reported. SIGHUP (a dropped SSH
    session) is handled as SIGTERM is."""
    x = Signalling(answers(), during=lambda argv: argv[:1] == ("push",) or (
        argv[:1] == ("rm",) and argv[-1].startswith("lwc-") and "lease" not in argv[-1]),
        signum=signum)
    s = settings()
    with pytest.raises(Interrupted) as raised:
        whole_job(s, x)
    assert raised.value.signal_name == signal.Signals(signum).name
    cleanup = [(argv, t) for argv, t in x.calls if argv[:1] in (("rm",), ("stop",))]
    assert (("stop", "--time", "10", "cvmfs"), "MainThread") in cleanup
    build = build_container(x)  # the one step beside the push: it has served
    assert cleanup and all(t == "MainThread" or (argv[-1] == build and t.startswith(
        "lwc-measure")) or argv[-1].startswith("cvmfs-lease-")  # (both done before)
        for argv, t in cleanup)
    builds = [argv[2] for argv in x.ran("create", "--name") if "lwcontainer.role=build" in argv]
    assert set(builds) <= {argv[-1] for argv in x.ran("rm", "--force")}
    assert not s.report.exists()


class HungUp(io.StringIO):
    """A terminal that is gone: every write after the hangup fails (EIO), as a tty's does."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = False

    def write(self, text: str) -> int:
        if self.gone:
            raise OSError(errno.EIO, "Input/output error")
        return super().write(text)


def test_a_hangup_whose_terminal_is_gone_still_cleans_up_and_says_interrupted(settings,
                                                                           handlers):
    """SIGHUP as an SSH session drops: the terminal the log goes to fails every write from
    then on. The log lines of the way out must not replace the interruption with an OSError
    (exit 1, a traceback nobody sees) nor skip a cleanup step."""
    terminal = HungUp()
    saved = structlog.get_config()
    logs.configure(fmt="json", stream=terminal)

    def hang_up(argv: tuple[str, ...]) -> bool:
        if argv[:1] == ("push",):
            terminal.gone = True
            return True
        return False
    x = Signalling(answers(), during=hang_up, signum=signal.SIGHUP)
    try:
        with pytest.raises(Interrupted) as raised:
            whole_job(settings(), x)
        logs.get_logger().error("interrupted")  # what the command's guard says last
    finally:
        structlog.configure(**saved)
    assert raised.value.signal_name == "SIGHUP"
    assert x.ran("stop", "--time", "10", "cvmfs")
    builds = [argv[2] for argv in x.ran("create", "--name") if "lwcontainer.role=build" in argv]
    assert builds and set(builds) <= {argv[-1] for argv in x.ran("rm", "--force")}
    assert '"stage_start"' in terminal.getvalue()  # it was written to until the hangup


def test_dry_run_prints_the_plan_in_order_and_runs_nothing(settings, tmp_path):
    out = io.StringIO()
    x = DryRunExecutor(Masker(["hunter2"]), out=out, err=io.StringIO())
    whole_job(settings(), x)
    plan = [line.split()[1] for line in out.getvalue().splitlines()]
    assert plan[:3] == ["version", "image", "login"]  # FROM inspected while logging in
    for first, then in (("login", "pull"), ("create", "start"), ("commit", "push")):
        assert plan.index(first) < plan.index(then)
    assert "tag" not in plan  # one target: the commit names it
    assert "hunter2" not in out.getvalue()
    assert not (tmp_path / "lwcontainer.env").exists()


# -- the orchestration alone, with an engine that records -----------------------------------
class FakeEngine:
    name = "fake"

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.log: list[str] = []

    def _step(self, name: str) -> None:
        self.log.append(name)
        if name == self.fail:
            raise {"build": BuildError, "publish": PushError}.get(name, RuntimeError)(name)

    @contextmanager
    def connect(self):
        self._step("connect")
        try:
            yield
        finally:
            self.log.append("disconnect")

    @contextmanager
    def workspace(self):
        self._step("prepare")
        try:
            yield
        finally:
            self.log.append("release")

    def build(self):
        self._step("build")

    def commit(self):
        self._step("commit")
        return Image("sha256:x")

    def measure(self, image):
        self.log.append("measure")
        return Image(image.id, 7)

    def publish(self, image):
        self._step("publish")
        return "r.io/me/ana@sha256:" + "e" * 64

    def built(self):
        self._step("built")
        return Image("sha256:old", 3)


def run_fake(settings, engine):
    s = settings()
    stages = Stages(s, Masker(), io.StringIO())
    return s, pipeline.whole_job(engine, stages, s, dry_run=True)


def test_orchestration_order_for_any_engine(settings):
    engine = FakeEngine()
    s, image = run_fake(settings, engine)
    assert engine.log == ["connect", "prepare", "build", "commit", "measure", "publish",
                          "release", "disconnect"]
    assert image == Image("sha256:x", 7)


def test_a_failed_build_releases_the_workspace_and_publishes_nothing(settings):
    engine = FakeEngine(fail="build")
    with pytest.raises(BuildError):
        run_fake(settings, engine)
    assert engine.log == ["connect", "prepare", "build", "release", "disconnect"]


def test_publish_only_publishes_the_image_built_before(settings):
    engine = FakeEngine()
    s = settings()
    image = pipeline.publish_only(engine, Stages(s, Masker(), io.StringIO()), s, dry_run=False)
    assert engine.log == ["connect", "built", "publish", "disconnect"]
    assert image == Image("sha256:old", 3)
    assert "LWC_LAYER_SIZE=3" in s.report.read_text()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_run_ends_with_one_plain_line_on_a_terminal(settings):
    s = settings()
    out = Terminal()
    pipeline._built(s, Image("sha256:" + "a" * 64, 1234), "r.io/me/ana@sha256:" + "e" * 64, out)
    assert out.getvalue() == (f"built r.io/me/ana:abc12345 (sha256:aaaaaaaaaaaa, layer 1,234 "
                              f"bytes): pushed r.io/me/ana:abc12345; report {s.report}\n")
    local = Terminal()
    pipeline._built(s, Image("sha256:" + "a" * 64), "", local)
    assert "local only (not pushed)" in local.getvalue()
    quiet = io.StringIO()
    pipeline._built(s, Image("sha256:" + "a" * 64), "", quiet)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("spelling", ["busybox", "docker.io/library/busybox",
                                      "index.docker.io/library/busybox:latest"])
def test_the_base_digest_is_found_however_from_is_spelled(settings, spelling):
    s = settings(FROM=spelling)
    engine, _ = engine_for(s, Recorder({}))
    engine.base = {"RepoDigests": ["other/busybox@sha256:" + "c" * 64,
                                   "busybox@sha256:" + "d" * 64]}
    assert engine.base_digest() == "sha256:" + "d" * 64


def test_push_never_builds_and_reports_but_pushes_nothing(settings):
    x = Recorder(answers())
    s = settings(LWC_PUSH="never")
    engine, stages = engine_for(s, x)
    with structlog.testing.capture_logs() as records:
        pipeline.whole_job(engine, stages, s, dry_run=False)
    assert not x.ran("push") and x.ran("commit")
    skipped = [r for r in records if r.get("stage") == "push" and r["event"] == "stage_done"]
    assert skipped[0]["outcome"] == "skipped" and "LWC_PUSH=never" in skipped[0]["reason"]
    assert "LWC_IMAGE_DIGEST=\n" in s.report.read_text()
