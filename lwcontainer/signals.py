"""SIGINT, SIGTERM and SIGHUP become an exception in the main thread, so every ``finally`` and
``__exit__`` runs; cleanup itself runs with them deferred until it is done. SIGHUP is a dropped
SSH session or closed terminal: its default action would leave the build container, the
automounter and the private docker config behind. One that is ignored when the run starts
(``nohup``: the run is to outlive the terminal) stays ignored."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import Interrupted

#: the signals that stop a run after its cleanup (exit 130)
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _heeded() -> list[int]:
    """``HANDLED`` less those ignored (nohup ignores SIGHUP; a shell, SIGINT of a job it runs
    in the background)."""
    return [sig for sig in HANDLED if signal.getsignal(sig) != signal.SIG_IGN]


def install() -> None:
    """Each of ``HANDLED`` not ignored raises ``Interrupted`` (a KeyboardInterrupt)."""
    for sig in _heeded():
        signal.signal(sig, _raise)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold ``HANDLED`` while the block runs; re-raise the first one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _f: caught.append(signum))
                for sig in _heeded()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            raise Interrupted(signal.Signals(caught[0]).name)
