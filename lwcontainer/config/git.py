"""Every ``git`` lwcontainer starts, hardened: the checkout's ``.git`` is untrusted (a build or an
earlier job may have written it), so no repository setting may run a program. Each call gets
``-c core.fsmonitor= -c core.hooksPath=/dev/null -c safe.directory=<project>``, no system or
global configuration (so neither can the user's own ``safe.directory`` be needed), none of the
job's secret variables, and a time limit.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Mapping

from .secrets import is_secret_name, user_secret_names

TIMEOUT_S = 30.0
#: Settings a repository's own config could use to run a program from the calls lwcontainer makes.
HARDENING = ("-c", "core.fsmonitor=", "-c", "core.hooksPath=/dev/null")
ISOLATION = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
             "GIT_TERMINAL_PROMPT": "0"}


def argv(project: Path, *args: str) -> tuple[str, ...]:
    """``git`` with the hardening, run in ``project`` (the arguments after the program)."""
    return (*HARDENING, "-c", f"safe.directory={project}", "-C", str(project), *args)


def environment(environ: Mapping[str, str], hide: Iterable[str] = ()) -> dict[str, str]:
    """The caller's environment without secrets (also the names in ``hide``: the user's
    LWC_SECRET_VARIABLES however given) or git's own variables that could point it elsewhere,
    plus the isolation from the system and global configuration."""
    user = (*user_secret_names(environ), *hide)
    kept = {k: v for k, v in environ.items()
            if not is_secret_name(k, user) and not k.startswith("GIT_")}
    return {**kept, **ISOLATION}


def run(project: Path, environ: Mapping[str, str], *args: str,
        hide: Iterable[str] = ()) -> tuple[int, str]:
    """(exit code, stdout) of one hardened git call; (127, "") without git, (124, "") when it
    takes longer than ``TIMEOUT_S``. Started with a complete environment of its own (plumbum
    would add to the process's), like every step of the executor."""
    program = shutil.which("git", path=environ.get("PATH"))
    if program is None:
        return 127, ""
    env = environment(environ, hide)
    try:
        done = subprocess.run([program, *argv(project, *args)], env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, ""
    return done.returncode, done.stdout
