"""SIGTERM becomes an exception in the main thread, so every ``finally`` and ``__exit__`` runs;
cleanup itself runs with SIGINT/SIGTERM deferred until it is done."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def install() -> None:
    """SIGINT and SIGTERM both raise ``Interrupted`` (a KeyboardInterrupt)."""
    for sig in _SIGNALS:
        signal.signal(sig, _raise)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the block runs; re-raise the first one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _f: caught.append(signum))
                for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            raise Interrupted(signal.Signals(caught[0]).name)
