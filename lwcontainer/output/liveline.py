"""The one live line on a terminal (progress draws it, the log writer erases it): its state and
its lock, below both, so that neither imports the other's writer."""
from __future__ import annotations

import threading
from typing import TextIO

LOCK = threading.RLock()  # guards the terminal line: the only lock of this kind
drawn: list[TextIO] = []  # the stream a live line is on, if one is


def clear_live_line() -> None:
    """Erase the live line, if one is drawn (called before every log record is written)."""
    with LOCK:
        if drawn:
            stream = drawn.pop()
            stream.write("\r\x1b[2K")
            stream.flush()
