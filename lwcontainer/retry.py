"""The one retry schedule: a failed try waits, then tries again; the waits double from a first
delay and are capped. Both the executor (docker steps) and the in-place publisher (registry
requests) use it, so "retried with a capped backoff" means the same thing everywhere.

Imports nothing of lwcontainer: callers pass their logger.
"""
from __future__ import annotations

import time
from typing import Any

MAX_BACKOFF_S = 30.0  # the longest wait between two tries


def delay(attempt: int, first: float, cap: float = MAX_BACKOFF_S) -> float:
    """The wait before try ``attempt + 1`` (``attempt`` >= 1 failed tries so far)."""
    return min(first * 2 ** (attempt - 1), cap)


class Backoff:
    """The tries of one action: ``retries`` after the first. ``again`` is called after each
    failed try: it logs a ``retry`` event, waits and returns True while a try is left, and
    returns False (without waiting) once they are spent."""

    def __init__(self, retries: int, first: float = 1.0, cap: float = MAX_BACKOFF_S) -> None:
        self.retries = retries
        self.first = first
        self.cap = cap
        self.failed = 0  # tries that failed so far

    def again(self, log: Any, what: str, reason: str) -> bool:
        self.failed += 1
        if self.failed > self.retries:
            return False
        wait = delay(self.failed, self.first, self.cap)
        log.warning("retry", what=what, attempt=self.failed + 1, attempts=self.retries + 1,
                    delay_s=wait, reason=reason)
        time.sleep(wait)
        return True
