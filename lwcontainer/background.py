"""Steps run in a thread while the main thread goes on; failures surface in the main thread."""
from __future__ import annotations

import threading
from typing import Callable


class Background:
    """Runs steps in a thread; ``join`` re-raises the first failure in the caller's thread."""

    def __init__(self, *steps: Callable[[], None], inline: bool = False) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(steps,), daemon=True)
        self.inline = inline
        if inline:  # a dry run prints its plan in order
            self._run(steps)
            self.raise_if_failed()
        else:
            self.thread.start()

    def _run(self, steps: tuple[Callable[[], None], ...]) -> None:
        try:
            for step in steps:
                step()
        except BaseException as exc:  # re-raised in the main thread by join()
            self.error = exc

    def raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def wait(self, timeout: float) -> bool:
        """True once the steps are done (a short wait: signals are handled in between)."""
        if self.inline:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def join(self, reraise: bool = True) -> None:
        while not self.wait(0.2):
            pass
        if reraise:
            self.raise_if_failed()
