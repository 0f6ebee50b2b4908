"""Long waits are never silent: a live single line on a terminal, a periodic log line in CI.

One live line at a time: when waits overlap (a pull in the background while CVMFS is awaited),
the newest draws and the others only count. A log record never lands on the live line: the log
writer erases it first (``clear_live_line``), and the next tick draws it again.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

import structlog

from .liveline import LOCK as _LOCK, clear_live_line, drawn as _drawn, say
from .logs import get_logger

_SPINNER = "|/-\\"
_waits: list[object] = []  # active waits, newest last; only the newest draws


@contextmanager
def progress(what: str, interval: float, stream: TextIO | None = None) -> Iterator[None]:
    stream = stream or sys.stderr
    live = stream.isatty()
    context = structlog.contextvars.get_contextvars()
    started = time.monotonic()
    done = threading.Event()
    token = object()
    with _LOCK:
        _waits.append(token)

    def tick() -> None:
        structlog.contextvars.bind_contextvars(**context)
        turn = 0
        while not done.wait(0.25 if live else interval):
            elapsed = time.monotonic() - started
            if not live:
                get_logger().info("waiting", what=what, elapsed_s=round(elapsed, 1))
                continue
            with _LOCK:
                if done.is_set() or not _waits or _waits[-1] is not token:
                    continue
                say(stream, f"\r\x1b[2K{_SPINNER[turn % 4]} {what} … {elapsed:.0f}s")
                if not _drawn:
                    _drawn.append(stream)
            turn += 1

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        with _LOCK:
            _waits.remove(token)
        clear_live_line()
