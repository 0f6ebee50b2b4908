"""Long waits are never silent: a live single line on a terminal, a periodic log line in CI."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

import structlog

from .logs import get_logger

_SPINNER = "|/-\\"


@contextmanager
def progress(what: str, interval: float, stream: TextIO | None = None) -> Iterator[None]:
    stream = stream or sys.stderr
    live = stream.isatty()
    context = structlog.contextvars.get_contextvars()
    started = time.monotonic()
    done = threading.Event()
    drawn = threading.Event()

    def tick() -> None:
        structlog.contextvars.bind_contextvars(**context)
        turn = 0
        while not done.wait(0.25 if live else interval):
            elapsed = time.monotonic() - started
            if live:
                stream.write(f"\r\x1b[2K{_SPINNER[turn % 4]} {what} … {elapsed:.0f}s")
                stream.flush()
                drawn.set()
                turn += 1
            else:
                get_logger().info("waiting", what=what, elapsed_s=round(elapsed, 1))

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        if drawn.is_set():  # erase the line we drew, so the next log line starts clean
            stream.write("\r\x1b[2K")
            stream.flush()
