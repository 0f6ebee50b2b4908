"""Where the stages' processes run (the engine's CLI, the in-place capture's bash): ``Step``
values go in, ``Completed`` values come out. (Reading the settings asks git directly:
``config/git.py``.)

Every step is a plumbum command (plumbum finds the program and formulates the argv) started with
the step's own complete environment, never the process's: nothing edits ``local.env``, so no
step's environment leaks into another's. One lock covers starting a child and ``abort``, so
nothing starts once a run is aborted. Non-interactive steps run in a session of their own (a
terminal's Ctrl-C reaches lwcontainer, which then stops the child and cleans up); interactive
ones (``run``) share the terminal. Secrets go on stdin only and are masked in everything
logged, streamed or raised.
"""
from __future__ import annotations

import collections
import functools
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Mapping

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from .errors import EngineError, Interrupted, LwcError
from .output.liveline import say
from .output.logs import get_logger
from .output.masking import Masker
from .config.secrets import is_secret_name, user_secret_names
from .retry import MAX_BACKOFF_S, Backoff
from .signals import HANDLED
TIMED_OUT = 124  # the exit code a step that ran out of time gets (as timeout(1) gives)

AUTH_MARKERS = ("unauthorized", "authentication required", "denied", "incorrect username",
                "no basic auth credentials", "forbidden")


def is_auth_error(stderr: str) -> bool:
    text = stderr.lower()
    return any(marker in text for marker in AUTH_MARKERS)


def transient(stderr: str) -> bool:
    """Worth another try: anything but a refused authentication."""
    return not is_auth_error(stderr)


def child_environment(environ: Mapping[str, str], extra: Mapping[str, str] = (),
                      hide: Iterable[str] = ()) -> dict[str, str]:
    """A complete environment for children: ``environ`` without any of the job's secret
    variables (config/secrets.py, plus the names in ``hide``: the user's LWC_SECRET_VARIABLES
    however given); no child needs them, a password goes on stdin. Then ``extra``."""
    user = (*user_secret_names(environ), *hide)
    return {**{k: v for k, v in environ.items() if not is_secret_name(k, user)}, **dict(extra)}


@dataclass(frozen=True)
class Step:
    """One invocation, as a value: what to run, in which environment, what its failure means."""

    argv: tuple[str, ...]
    program: str = field(kw_only=True)  # always given: an engine's EngineCli, or "bash"
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    cwd: str | None = None
    timeout: float | None = None  # wall-clock limit in seconds; None: none (the build)
    timeout_setting: str = ""  # the setting that sets it, named when it fires
    shown: str = ""  # what logs and dry runs show instead of the argv (a long inline script)
    # given at once; or a gate: the child waits (its timeout not yet running) until the future
    # settles, then gets its text (none, just the end of input, if it failed or was cancelled)
    stdin: str | Future[str] | None = field(default=None, repr=False)
    stream: bool = False
    on_line: Callable[[str], None] | None = None  # with stream: stdout lines go here instead
    observe: Callable[[str], None] | None = None  # with stream: sees every line of both
    interactive: bool = False  # inherit the terminal: stdin, stdout and stderr are ours
    check: bool = True
    error: type[LwcError] = LwcError
    what: str = ""  # how messages name the step (default: the program)
    retries: int = 0
    retry_if: Callable[[str], bool] = transient
    placeholder: str = ""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Executor:
    dry_run = False

    def __init__(self, masker: Masker, backoff: float = 1.0, out: IO[str] | None = None,
                 err: IO[str] | None = None, max_backoff: float = MAX_BACKOFF_S) -> None:
        self.masker = masker
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.log = get_logger()
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._aborted = False

    @staticmethod
    def argv(step: Step) -> list[str]:
        """The full argv, as plumbum formulates it for the program found on PATH; behind
        ``setpriv --pdeathsig KILL`` where there is one, so that no child outlives a
        lwcontainer that was killed (the signal fires when the spawning thread ends, and every
        step is waited for by the thread that spawned it)."""
        try:
            program = local[step.program]
        except CommandNotFound:
            raise EngineError(f"the {step.program} command is not on PATH") from None
        argv = [str(program.executable), *program[step.argv].formulate()[1:]]
        return [*_guard(), *argv] if not step.interactive else argv

    def line(self, step: Step) -> str:
        """The shell-quoted command line, secrets masked, control characters escaped: what
        logs and dry runs show."""
        return printable(self.masker(step.shown or shlex.join((step.program, *step.argv))))

    def run(self, step: Step) -> Completed:
        assert not (step.retries and isinstance(step.stdin, Future)), "a gate opens once"
        backoff = Backoff(step.retries, self.backoff, self.max_backoff)
        while True:
            self.log.debug("step", command=self.line(step), attempt=backoff.failed + 1)
            done = self._run_once(step)
            if done.ok:
                return done
            if not step.retry_if(done.stderr) or not backoff.again(
                    self.log, step.what, self.masker(last_line(done.stderr))):
                if not step.check:
                    return done
                raise step.error(self.failure_message(step, done))

    def failure_message(self, step: Step, done: Completed) -> str:
        said = tail_lines(self.masker(done.stderr))  # masked, then cut
        return self.masker(f"{step.what or step.program} failed (exit {done.returncode}): "
                           f"{said or 'no message'}")

    def _spawn(self, step: Step) -> subprocess.Popen:
        env = dict(step.env)  # the step's own, complete environment
        if step.interactive:
            return subprocess.Popen(self.argv(step), env=env, cwd=step.cwd)
        return subprocess.Popen(
            self.argv(step), env=env, cwd=step.cwd,
            stdin=subprocess.PIPE if step.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def _run_once(self, step: Step) -> Completed:
        with self._lock:
            if self._aborted:  # a background thread must not start anything after a signal
                raise Interrupted("aborted")
            proc = self._spawn(step)
            self._running.add(proc)
        try:
            if step.interactive:
                return Completed(_wait(proc), "", "")
            data = _gate(proc, step.stdin) if isinstance(step.stdin, Future) else step.stdin
            deadline = None if step.timeout is None else time.monotonic() + step.timeout
            if step.stream:
                return self._stream(proc, step, deadline)
            out, err = _communicate(proc, _encode(data), deadline)
            if out is None:
                return self._timed_out(proc, step)
            # stderr masked here, before any caller cuts it into a message (a cut secret
            # would no longer match); stdout is data (JSON, ids) and is masked where shown
            return Completed(proc.returncode, _decode(out), self.masker(_decode(err)))
        except BaseException:
            _terminate(proc, group=not step.interactive)
            raise
        finally:
            with self._lock:
                self._running.discard(proc)

    def abort(self) -> None:
        """Stop every child still running (those of background threads, after a failure or a
        signal) and refuse to start new ones. Call it after cleanup, which needs the executor."""
        with self._lock:
            self._aborted = True
            running = list(self._running)
        for proc in running:
            _terminate(proc)

    def _timed_out(self, proc: subprocess.Popen, step: Step) -> Completed:
        _terminate(proc)
        where = f" ({step.timeout_setting})" if step.timeout_setting else ""
        return Completed(TIMED_OUT, "", f"lwcontainer: {step.what or step.program} did not "
                                        f"finish within "
                                        f"{step.timeout:g}s{where}; stopped")

    def _stream(self, proc: subprocess.Popen, step: Step,
                deadline: float | None = None) -> Completed:
        """Tee the child's stdout and stderr live, masked (or hand stdout lines to
        ``step.on_line``); keep stdout, and stderr's tail for the error."""
        out: list[str] = []
        tail: collections.deque[str] = collections.deque(maxlen=40)
        stdout_sink = None if step.on_line else self.out
        stderr_sink = None if step.on_line else self.err
        pumps = [threading.Thread(target=self._pump, daemon=True,
                                  args=(proc.stdout, stdout_sink, out,
                                        (step.on_line, step.observe))),
                 threading.Thread(target=self._pump, daemon=True,
                                  args=(proc.stderr, stderr_sink, tail, (step.observe,)))]
        if step.stdin is not None:
            assert not isinstance(step.stdin, Future), "a gated step is not streamed"
            proc.stdin.write(_encode(step.stdin))
            proc.stdin.close()
        for pump in pumps:
            pump.start()
        returncode = _wait(proc, deadline)
        if returncode is None:
            return self._timed_out(proc, step)
        for pump in pumps:
            pump.join(timeout=5)
        return Completed(returncode, "".join(out) if step.on_line else "", "".join(tail))

    def _pump(self, source: IO[bytes], sink: IO[str] | None, keep,
              callbacks: tuple[Callable[[str], None] | None, ...]) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(HANDLED))
        for raw in iter(source.readline, b""):
            text = self.masker(_decode(raw))
            keep.append(text)
            for callback in callbacks:
                if callback is None:
                    continue
                try:
                    callback(text)
                except Exception:  # noqa: BLE001 - the pipe must keep draining
                    get_logger().debug("line_callback_failed", exc_info=True)
            if sink is not None:  # a closed terminal or pipe ('| less', quit): drained on
                say(sink, text)
        source.close()


class DryRunExecutor(Executor):
    """Prints each command instead of running it; touches no engine."""

    dry_run = True

    def run(self, step: Step) -> Completed:
        stdin = " <<< (password on stdin)" if step.stdin is not None else ""
        self.out.write(self.line(step) + stdin + "\n")
        self.out.flush()
        return Completed(0, step.placeholder, "")


@functools.cache
def _guard() -> tuple[str, ...]:
    try:
        return (str(local["setpriv"].executable), "--pdeathsig", "KILL", "--")
    except CommandNotFound:
        return ()


def printable(text: str) -> str:
    """Control characters as escapes, so a value cannot move the cursor or fake a line."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tail_lines(text: str, limit: int = 600) -> str:
    """A program's error output kept whole (lines joined by ' | '), trimmed from the front to
    ``limit`` characters: docker's cause is often before its last line."""
    joined = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined if len(joined) <= limit else "…" + joined[-limit:]


# Waits wake up often: a signal that the kernel hands to another thread only runs its Python
# handler (which raises Interrupted) when the main thread executes bytecode again.
_POLL_S = 0.2


def _wait(proc: subprocess.Popen, deadline: float | None = None) -> int | None:
    """The exit code, or None once ``deadline`` (monotonic) has passed. Woken by the child's
    exit itself where the kernel offers a pidfd (Linux 5.3): ``Popen.wait(timeout)`` sleeps up
    to 50 ms between looks, on the way of every streamed step, the build's included."""
    exited = _exit_poll(proc)
    try:
        while True:
            if exited is not None:
                exited[1].poll(_POLL_S * 1000)
            try:
                return proc.wait(timeout=0 if exited is not None else _POLL_S)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
    finally:
        if exited is not None:
            os.close(exited[0])


def _exit_poll(proc: subprocess.Popen) -> tuple[int, select.poll] | None:
    """A pidfd of the child and a poll that returns once it has exited; None without one."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # an older kernel or Python, or already reaped
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return fd, poller


def _communicate(proc: subprocess.Popen, data: bytes | None,
                 deadline: float | None = None) -> tuple[bytes | None, bytes | None]:
    """(stdout, stderr), or (None, None) once ``deadline`` has passed."""
    while True:
        try:
            return proc.communicate(data, timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            data = None  # already sent; communicate() keeps what it has read so far
            if deadline is not None and time.monotonic() >= deadline:
                return None, None


def _gate(proc: subprocess.Popen, gate: Future[str]) -> str | None:
    """What a gated step gets on stdin, once ``gate`` settles: its text, or None (the end of
    input only) if it failed or was cancelled, or if the child has ended meanwhile."""
    while not gate.done():  # (wait() alone misses a cancel nobody was notified of)
        if proc.poll() is not None:
            return None
        wait((gate,), timeout=_POLL_S)
    try:
        return gate.result()
    except (Exception, CancelledError):  # noqa: BLE001 - the child is told by its stdin's end
        return None


def _terminate(proc: subprocess.Popen, group: bool = True) -> None:
    """Stop a child (and its session) that we are abandoning: TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if proc.poll() is not None:
            return
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
