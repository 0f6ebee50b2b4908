"""Secret masking: every log record, error message and streamed line passes through one Masker.

A secret is masked in the forms it commonly takes on its way into text: as given, each line of a
multi-line secret, escaped as Python's repr and JSON write it, URL-encoded, and base64 of
``user:password`` (what a docker config or a Basic header holds)."""
from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any, Iterable

MASK = "*****"
CUT = "…"  # where lwcontainer shortens a text: what is left of a secret beside it is masked
MIN_PART = 4  # a line of a secret shorter than this is too common a string to mask on its own


def forms(secret: str) -> set[str]:
    """The texts a secret can appear as."""
    out = {secret}
    lines = [line.strip("\r") for line in secret.split("\n")]
    if len(lines) > 1:
        out.update(line for line in lines if len(line) >= MIN_PART)
    out.add(json.dumps(secret)[1:-1])
    out.add(repr(secret)[1:-1])
    out.add(urllib.parse.quote(secret, safe=""))
    return {form for form in out if form}


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret:
                self._secrets.update(forms(secret))
        # Longest first, so a secret that contains another is masked whole.
        self._ordered = sorted(self._secrets, key=len, reverse=True)

    def add_credentials(self, user: str | None, password: str | None) -> None:
        """``user:password`` in base64, as docker stores it and a Basic header sends it."""
        if user and password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.add(pair, pair.rstrip("="))

    def __call__(self, value: Any) -> Any:
        """Mask secrets in a string, or in every string inside lists, tuples and dicts."""
        if isinstance(value, str):
            for secret in self._ordered:
                value = value.replace(secret, MASK)
            return self._cut_remnants(value) if CUT in value else value
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value

    def _cut_remnants(self, text: str) -> str:
        """A text cut before it was masked keeps a secret's end after the cut mark, or its
        start before it: mask such a remnant (``MIN_PART`` characters or more)."""
        for secret in self._ordered:
            for size in range(len(secret) - 1, MIN_PART - 1, -1):
                text = text.replace(CUT + secret[-size:], CUT + MASK)
                text = text.replace(secret[:size] + CUT, MASK + CUT)
        return text

    def processor(self, _logger: Any, _name: str, event_dict: dict) -> dict:
        """structlog processor: mask every value of the record."""
        return self(event_dict)
