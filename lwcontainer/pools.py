"""Where work overlaps: a thread pool, or, for a dry run, a pool that runs each call at once so
the plan prints in order. Either way the caller holds futures and ``result()`` re-raises."""
from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
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
