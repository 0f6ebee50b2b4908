"""Where work overlaps: a thread pool, or, for a dry run, a pool that runs each call at once so
the plan prints in order. Either way the caller holds futures and ``result()`` re-raises."""
from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, InvalidStateError, ThreadPoolExecutor
from typing import Callable


class InlinePool(Executor):
    """Runs each submitted call at once, in the caller's thread."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: B036 - handed to the caller by result()
            future.set_exception(exc)
        return future


def pool(dry_run: bool, name: str, workers: int = 2) -> Executor:
    return InlinePool() if dry_run else ThreadPoolExecutor(workers, name)


def detached(name: str, fn: Callable, /, *args) -> Future:
    """``fn(*args)`` on a daemon thread of its own: for work nobody may have to wait for, not
    even the process's exit (a pool's threads are joined then)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: B036 - handed to the caller by result()
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def settle(future: Future) -> None:
    """Resolve ``future`` (to None) unless it is already done: several threads may say so."""
    try:
        future.set_result(None)
    except InvalidStateError:
        pass


def wait_any(*futures: Future) -> None:
    """Until one of ``futures`` is done, a cancelled one included: ``wait()`` misses a cancel
    (it is only told of those a pool cancels), a done-callback does not."""
    woken = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: woken.set())
    woken.wait()
