"""Merge the sources of settings into one mapping: defaults < .env < environment < switches.

``os.environ`` is read (by the caller) and never changed; the ``.env`` file never overrides it.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from plumbum import local
from plumbum.commands.processes import CommandNotFound

from ..ci.github import github_defaults
from ..errors import ConfigError


def read_env_file(path: Path) -> dict[str, str]:
    """A dotenv file's values; a line it cannot parse is a ConfigError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--env-file", f"cannot read {path}: {exc}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError("--env-file", f"{path} line {binding.original.line}: cannot parse "
                                            f"{binding.original.string.strip()[:60]!r}")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def git_defaults(project_dir: Path) -> dict[str, str]:
    """CI_COMMIT_SHA / CI_COMMIT_SHORT_SHA from the checkout's git HEAD, when there is one."""
    try:
        git = local["git"]
    except CommandNotFound:
        return {}
    rc, out, _ = git["-C", str(project_dir), "rev-parse", "HEAD"].run(retcode=None)
    sha = out.strip()
    if rc != 0 or len(sha) < 8:
        return {}
    return {"CI_COMMIT_SHA": sha, "CI_COMMIT_SHORT_SHA": sha[:8]}


def gather(environ: Mapping[str, str], switches: Mapping[str, str | None],
           env_file: str | None = None, cwd: Path | None = None) -> dict[str, str]:
    cwd = Path(cwd or Path.cwd())
    if env_file is not None:
        path = cwd / env_file
        if not path.is_file():
            raise ConfigError("--env-file", f"{path} does not exist")
        file_values = read_env_file(path)
    else:
        path = cwd / ".env"
        file_values = read_env_file(path) if path.is_file() else {}
    given = {k: v for k, v in switches.items() if v is not None}
    merged = {**file_values, **environ, **given}
    project_dir = cwd / merged.get("LWC_PROJECT_DIR", ".")
    defaults = git_defaults(project_dir) if project_dir.is_dir() else {}
    return {**defaults, **github_defaults(merged), **merged}
