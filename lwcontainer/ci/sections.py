"""Collapsible log sections for each stage: GitLab's section markers, GitHub Actions' groups."""
from __future__ import annotations

import re
import threading
import time
from typing import TextIO

from ..output.liveline import say

ESC = "\x1b[0K"
EXPANDED = frozenset({"build"})  # the build's output is what a reader opens the log for


class Sections:
    """Stage sections in the job log. Stages of background threads cannot nest with the main
    thread's, so they are written afterwards, with their own start and end times."""

    def __init__(self, style: str | None, stream: TextIO) -> None:
        self.style = style
        self.stream = stream
        self.lock = threading.Lock()
        self.pending: list[tuple[str, float, float, str]] = []

    def _write(self, text: str) -> None:
        with self.lock:
            say(self.stream, text)

    def open(self, name: str, header: str, when: float | None = None) -> None:
        when = when or time.time()
        if self.style == "gitlab":
            collapsed = "" if name in EXPANDED else "[collapsed=true]"
            self._write(f"{ESC}section_start:{int(when)}:{_name(name)}{collapsed}\r{ESC}{header}\n")
        elif self.style == "github":
            self._write(f"::group::{header}\n")

    def close(self, name: str, when: float | None = None) -> None:
        when = when or time.time()
        if self.style == "gitlab":
            self._write(f"{ESC}section_end:{int(when)}:{_name(name)}\r{ESC}\n")
        elif self.style == "github":
            self._write("::endgroup::\n")

    def later(self, name: str, started: float, ended: float, summary: str) -> None:
        if self.style is None:
            return
        with self.lock:
            self.pending.append((name, started, ended, summary))

    def flush(self) -> None:
        """Write the sections of background stages that have finished (main thread only)."""
        with self.lock:
            pending, self.pending = self.pending, []
        for name, started, ended, summary in pending:
            self.open(name, f"lwcontainer: {name}", started)
            self._write(summary + "\n")
            self.close(name, ended)


def _name(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"lwc_{stage}")
