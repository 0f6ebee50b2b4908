"""The one live line on a terminal (progress draws it, the log writer erases it): its state and
its lock, below both, so that neither imports the other's writer. And ``say``, the one way
anything of lwcontainer's own writes to the terminal or a pipe."""
from __future__ import annotations

import threading
import weakref
from typing import TextIO

LOCK = threading.RLock()  # guards the terminal line: the only lock of this kind
drawn: list[TextIO] = []  # the stream a live line is on, if one is
_gone: weakref.WeakSet = weakref.WeakSet()  # streams that refused: a terminal gone, a pipe closed


def say(stream: TextIO, text: str) -> None:
    """Write and flush ``text``; a stream that refused once (EIO after a hangup, EPIPE after
    '| less' quit) gets nothing more, and the run goes on to its cleanup and exit code instead
    of failing on its own log line."""
    if stream in _gone:
        return
    try:
        stream.write(text)
        stream.flush()
    except OSError:
        _gone.add(stream)


def clear_live_line() -> None:
    """Erase the live line, if one is drawn (called before every log record is written)."""
    with LOCK:
        if drawn:
            say(drawn.pop(), "\r\x1b[2K")
