"""The executor against a fake ``docker`` on PATH (put there with plumbum's local.env)."""
import io
import json
import os
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from plumbum import local

from lwcontainer.errors import Interrupted, LoginError, PushError
from lwcontainer.executor import DryRunExecutor, Executor, Step, child_environment
from lwcontainer.output.masking import MASK, Masker

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def fake(tmp_path):
    calls = tmp_path / "calls.jsonl"
    plan = tmp_path / "plan.json"

    class Fake:
        def answer(self, *answers):
            plan.write_text(json.dumps(list(answers)))

        @property
        def calls(self):
            if not calls.exists():
                return []
            return [json.loads(line) for line in calls.read_text().splitlines()]

    fake = Fake()
    fake.answer({"rc": 0})
    with local.env(PATH=f"{FAKES}:{local.env['PATH']}", FAKE_DOCKER_LOG=str(calls),
                   FAKE_DOCKER_PLAN=str(plan)):
        yield fake


def step(*args, **kw):
    """A step with the environment it would get from the process's own (secrets removed)."""
    kw.setdefault("program", "docker")  # the fake docker of tests/fakes
    return Step(*args, env=child_environment(local.env.getdict()), **kw)


def executor(**kw):
    return Executor(Masker(["hunter2"]), backoff=0.01, **kw)


def test_runs_argv_and_secret_goes_to_stdin_only(fake):
    fake.answer({"rc": 0, "stdout": "Login Succeeded\n"})
    with local.env(CI_JOB_TOKEN="hunter2", CI_REGISTRY_PASSWORD="hunter2", CI_JOB_ID="7"):
        done = executor().run(step(("login", "--username", "u", "--password-stdin", "r.io"),
                                   stdin="hunter2"))
    assert done.ok and done.stdout == "Login Succeeded\n"
    assert fake.calls == [{"argv": ["login", "--username", "u", "--password-stdin", "r.io"],
                           "stdin": "hunter2", "env": ["CI_JOB_ID"]}]


def test_auth_failure_is_not_retried_and_is_masked(fake):
    fake.answer({"rc": 1, "stderr": "Error: unauthorized: bad password hunter2\n"})
    with pytest.raises(LoginError) as info:
        executor().run(step(("login",), stdin="hunter2", error=LoginError, retries=3,
                            what="docker login"))
    assert len(fake.calls) == 1
    assert "hunter2" not in str(info.value) and MASK in str(info.value)
    assert "unauthorized" in str(info.value)


def test_transient_failure_is_retried_then_succeeds(fake):
    fake.answer({"rc": 1, "stderr": "net/http: TLS handshake timeout\n"},
                {"rc": 1, "stderr": "connection reset by peer\n"},
                {"rc": 0, "stdout": "latest: digest: sha256:abc size: 1\n"})
    done = executor().run(step(("push", "r/x:1"), retries=3, error=PushError))
    assert done.ok and len(fake.calls) == 3


def test_retries_exhausted_raise_the_steps_error(fake):
    fake.answer({"rc": 1, "stderr": "503 Service Unavailable\n"})
    with pytest.raises(PushError, match="503 Service Unavailable"):
        executor().run(step(("push", "r/x:1"), retries=2, error=PushError, what="docker push"))
    assert len(fake.calls) == 3


def test_unchecked_step_is_retried_then_its_failure_returned(fake):
    fake.answer({"rc": 1, "stderr": "Method not allowed\n"})
    done = executor().run(step(("push", "r/x:1"), retries=2, check=False))
    assert done.returncode == 1 and len(fake.calls) == 3


def test_unchecked_failure_is_returned(fake):
    fake.answer({"rc": 1, "stderr": "Error: No such image\n"})
    done = executor().run(step(("image", "inspect", "x"), check=False))
    assert done.returncode == 1 and "No such image" in done.stderr


def test_stream_tees_lines_live_and_masks(fake):
    fake.answer({"rc": 3, "lines": ["one", "two hunter2"], "stderr": "boom\n"})
    out, err = io.StringIO(), io.StringIO()
    done = executor(out=out, err=err).run(step(("run", "x"), stream=True, check=False))
    assert done.returncode == 3
    assert out.getvalue() == f"one\ntwo {MASK}\n"
    assert err.getvalue() == "boom\n" and done.stderr == "boom\n"


def test_an_observer_sees_every_line_of_both_streams_masked_while_they_are_teed(fake):
    fake.answer({"rc": 0, "lines": ["one", "two hunter2"], "stderr": "ready hunter2\n"})
    out, err, seen = io.StringIO(), io.StringIO(), []
    done = executor(out=out, err=err).run(step(("start", "--attach", "b"), stream=True,
                                              observe=seen.append))
    assert done.ok
    assert sorted(seen) == sorted(["one\n", f"two {MASK}\n", f"ready {MASK}\n"])
    assert out.getvalue() == f"one\ntwo {MASK}\n" and err.getvalue() == f"ready {MASK}\n"


def test_interrupt_kills_the_child_and_propagates(fake):
    fake.answer({"rc": 0, "sleep": 30})
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(Interrupted()))
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        started = time.monotonic()
        timer.start()
        with pytest.raises(Interrupted):
            executor().run(step(("run", "slow"), stream=True))
        assert time.monotonic() - started < 10
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def test_dry_run_prints_masked_commands_and_runs_nothing(fake):
    out = io.StringIO()
    dry = DryRunExecutor(Masker(["hunter2"]), out=out)
    done = dry.run(step(("login", "--username", "hunter2", "--password-stdin", "r.io"),
                        stdin="hunter2", placeholder="x"))
    assert done.ok and done.stdout == "x"
    assert fake.calls == []
    line = out.getvalue()
    assert "hunter2" not in line and "login --username" in line and "password on stdin" in line


def test_dockers_whole_message_is_kept_not_only_its_last_line(fake):
    fake.answer({"rc": 125, "stderr": "docker: Error response from daemon: invalid mount config "
                                       "for type \"bind\": bind source path does not exist: "
                                       "/nope.\nSee 'docker run --help'.\n"})
    done = executor().run(step(("run", "x"), check=False, what="CVMFS probe"))
    message = executor().failure_message(step(("run", "x"), what="CVMFS probe"), done)
    assert "bind source path does not exist: /nope" in message
    assert "See 'docker run --help'" in message


def test_a_gated_step_waits_for_its_stdin_then_its_timeout_runs(fake):
    """A gated step's child starts at once and gets its stdin when the future settles; its
    timeout counts from then. A cancelled gate gives it only the end of its input."""
    reads = ("-c", 'read -r line; echo "got=$line"')
    gate: Future = Future()
    threading.Timer(1.5, gate.set_result, ("go\n",)).start()
    done = executor().run(Step(reads, program="bash", stdin=gate, timeout=1.0, check=False))
    assert (done.returncode, done.stdout) == (0, "got=go\n")
    closed: Future = Future()
    threading.Timer(0.3, closed.cancel).start()
    done = executor().run(Step(reads, program="bash", stdin=closed, timeout=5, check=False))
    assert (done.returncode, done.stdout) == (0, "got=\n")
    failed: Future = Future()
    failed.set_exception(RuntimeError("the build failed"))
    done = executor().run(Step(reads, program="bash", stdin=failed, timeout=5, check=False))
    assert done.stdout == "got=\n"


def test_a_streamed_step_is_woken_by_its_childs_exit_not_by_a_timer(monkeypatch):
    """The wait on a streamed step (the build) polls the child's pidfd: it reports the exit
    itself, where ``Popen.wait(timeout)`` would look again only after up to 50 ms."""
    import subprocess
    from lwcontainer.executor import _exit_poll, _wait
    child = subprocess.Popen(["sleep", "0.2"])
    exited = _exit_poll(child)
    if exited is None:
        child.wait()
        pytest.skip("no pidfd here (Linux < 5.3): the wait polls as Popen.wait does")
    try:
        assert exited[1].poll(0) == []
        assert exited[1].poll(10_000) != []  # the exit, not the 10 s
    finally:
        os.close(exited[0])
    timeouts = []
    wait = subprocess.Popen.wait
    monkeypatch.setattr(subprocess.Popen, "wait",
                        lambda self, timeout=None: timeouts.append(timeout) or wait(self, timeout))
    assert _wait(child) == 0
    running = subprocess.Popen(["sleep", "5"])
    assert _wait(running, deadline=time.monotonic() + 0.3) is None  # out of time: not ended
    running.kill()
    assert _wait(running) == -signal.SIGKILL
    assert timeouts and set(timeouts) == {0}  # never a sleeping wait


class ClosedAfterOneLine(io.StringIO):
    """A terminal or pipe the reader has closed after the first line ('| less', then q)."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_output_is_drained_to_the_end_not_left_to_block_the_child():
    """The build's output tee'd into a pipe its reader has closed: the pumps stop writing but
    drain the child (far more than a pipe holds) to its end, still observing each line and
    keeping stderr's tail, so the step ends with the child's exit code instead of hanging.
    (The time limit only turns a regression into a failure.)"""
    script = ("for i in $(seq 1 20000); do echo line $i; echo err $i >&2; done; "
              "echo last words >&2; exit 3")
    out, err, seen = ClosedAfterOneLine(), ClosedAfterOneLine(), []
    done = executor(out=out, err=err).run(step(("-c", script), program="bash", stream=True,
                                               check=False, timeout=30, observe=seen.append))
    assert done.returncode == 3
    assert done.stderr.endswith("err 20000\nlast words\n")
    assert len(seen) == 40001
    assert out.getvalue() == "line 1\n" and err.getvalue() == "err 1\n"
