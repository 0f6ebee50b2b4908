"""Secret masking: every log record, error message and streamed line passes through one Masker."""
from __future__ import annotations

from typing import Any, Iterable

MASK = "*****"


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        self._secrets.update(s for s in secrets if s)

    def __call__(self, value: Any) -> Any:
        """Mask secrets in a string, or in every string inside lists, tuples and dicts."""
        if isinstance(value, str):
            # Longest first, so a secret that contains another is masked whole.
            for secret in sorted(self._secrets, key=len, reverse=True):
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value

    def processor(self, _logger: Any, _name: str, event_dict: dict) -> dict:
        """structlog processor: mask every value of the record."""
        return self(event_dict)
