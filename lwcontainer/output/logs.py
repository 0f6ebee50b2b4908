"""structlog, configured once: console on a terminal, JSON lines otherwise, always to stderr."""
from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from .liveline import LOCK, clear_live_line, say
from .masking import Masker


def use_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "auto":
        return not stream.isatty()
    return fmt == "json"


def configure(fmt: str = "auto", level: str = "info", masker: Masker | None = None,
              stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    masker = masker or Masker()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json(fmt, stream):
        # Tracebacks without local variables: a local may hold a secret in a form no masker
        # recognises (truncated, escaped, inside a mapping).
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        tail = [tracebacks, masker.processor,
                structlog.processors.JSONRenderer()]
    else:
        tail = [structlog.processors.format_exc_info, masker.processor,
                structlog.dev.ConsoleRenderer(colors=stream.isatty(),
                                              exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: _LineSafeLogger(stream),
        cache_logger_on_first_use=False,
    )


class _LineSafeLogger:
    """One line a record; a live progress line is erased first, so they never share a line (the
    terminal's lock held throughout). A stream that can no longer be written gets nothing more
    (``say``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def msg(self, message: str) -> None:
        with LOCK:
            clear_live_line()
            say(self.stream, message + "\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("lwcontainer")
