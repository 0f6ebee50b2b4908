"""GitHub Actions: masking for its log (its variables under GitLab's names: config/platform.py)."""
from __future__ import annotations

from ..output.masking import MIN_PART


def escape_data(text: str) -> str:
    """As GitHub's toolkit escapes a workflow command's data."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def add_mask_commands(secret: str) -> list[str]:
    """``::add-mask::`` lines for a secret: GitHub masks line by line, so a multi-line secret
    gets one command per line, and the whole of it once more. A line shorter than the masker's
    MIN_PART is not masked on its own (a line ``}`` would mask every ``}`` in the log)."""
    lines = [line for line in secret.replace("\r", "").split("\n") if len(line) >= MIN_PART]
    parts = [line for line in lines if line != secret]
    return [f"::add-mask::{escape_data(part)}" for part in [secret, *parts]]
