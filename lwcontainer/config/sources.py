"""Merge the sources of settings into one mapping: defaults < .env < environment < switches.

``os.environ`` is read (by the caller) and never changed; the ``.env`` file never overrides it.
The checkout's own ``.env`` is not trusted to steer the engine: it may set only the build inputs
the settings table allows (``Spec.dotenv``); anything else there is refused, naming the key.
A file the user names with ``--env-file`` is the user's and may set any setting. Neither is
interpolated: ``${VAR}`` stays as written, so no file can copy a secret into a tag or label.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable, Mapping

from dotenv import dotenv_values

from ..errors import ConfigError
from ..output.logs import get_logger
from . import git
from .platform import github_defaults
from .secrets import user_secret_names
from .settings import DOTENV_ALLOWED, SPEC_BY_NAME, checkout_target

#: Variables of the pipelines ``lwcontainer init`` writes (and of the CI/CD component): the
#: jobs' own, read by the CI file, never by lwcontainer; known, so never warned about.
SCAFFOLD_VARIABLES = ("LWC_RUNNER_TAG", "LWC_PACKAGE_INDEX", "LWC_PYTHON_IMAGE")
# Names a user may mean although no Spec has them (read elsewhere, or by the docker CLI).
KNOWN_NAMES = frozenset({*SPEC_BY_NAME, *SCAFFOLD_VARIABLES, "CI_JOB_TOKEN", "CI_BUILD_TOKEN",
                         "GITHUB_TOKEN", "HOME",
                         "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
                         "LWC_BUILD_ENV", "LWC_TESTBED_ENV", "LWC_REQUIRE_DOCKER"})


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_env_file(path: Path, switch: str = "--env-file") -> dict[str, str]:
    """A dotenv file's values, not interpolated; a line python-dotenv cannot parse (it says so
    through its logger, its public way) is a ConfigError naming the line, not its content,
    which may hold a password."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(switch, f"cannot read {path}: {exc}") from None
    collect = _Collect()
    logger = logging.getLogger("dotenv.main")
    logger.addHandler(collect)
    try:
        values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    finally:
        logger.removeHandler(collect)
    if collect.messages:
        line = collect.messages[0].rsplit(" ", 1)[-1]
        raise ConfigError(switch, f"{path} line {line}: cannot parse it (expected NAME=value)")
    return {k: v for k, v in values.items() if v is not None}


def did_you_mean(name: str, names: Iterable[str] = KNOWN_NAMES) -> str | None:
    """The known name within two edits of ``name``, if there is one."""
    best = min(((_distance(name.upper(), known), known) for known in names), default=None)
    return best[1] if best and best[0] <= 2 else None


def _distance(a: str, b: str) -> int:
    """Levenshtein distance, with a transposition counted as one edit."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def check_checkout_env(path: Path, values: Mapping[str, str]) -> None:
    """The checkout's .env may set build inputs only; a typo gets a suggestion."""
    for key in values:
        if key in DOTENV_ALLOWED:
            continue
        if key in SPEC_BY_NAME or key in KNOWN_NAMES:
            raise ConfigError(key, f"set in {path}, which may set only build inputs "
                                   f"({', '.join(sorted(DOTENV_ALLOWED))}); set {key} in the "
                                   "environment or on the command line")
        hint = did_you_mean(key)
        raise ConfigError(key, f"in {path} is no setting of lwcontainer"
                               + (f"; did you mean {hint}?" if hint else ""))
    for tag in values.get("LWC_EXTRA_TAGS", "").replace(",", " ").split():
        if "/" in tag or ":" in tag:
            raise ConfigError("LWC_EXTRA_TAGS", f"{tag!r} in {path}: the checkout's .env may "
                                                "name bare tags of TO's repository only")


def warn_unknown(environ: Mapping[str, str]) -> None:
    """An LWC_* variable that is no setting: most likely a typo."""
    for key in environ:
        if key.startswith("LWC_") and key not in KNOWN_NAMES:
            hint = did_you_mean(key)
            get_logger().warning("unknown_setting", variable=key,
                                 hint=f"did you mean {hint}?" if hint else None)


def git_defaults(project_dir: Path, environ: Mapping[str, str],
                 hide: Iterable[str] = ()) -> dict[str, str]:
    """CI_COMMIT_SHA / CI_COMMIT_SHORT_SHA from the project's own git HEAD: only when the
    project directory is the top of a git work tree, never a repository it merely lies in
    (a scratch copy inside lwcontainer's own checkout is not lwcontainer's commit). The
    checkout's .git is untrusted: git runs hardened (config/git.py), without the secret
    variables (``hide``: the user's, however given)."""
    project = project_dir.resolve()
    rc, top = git.run(project, environ, "rev-parse", "--show-toplevel", hide=hide)
    if rc != 0 and (project / ".git").exists():
        # a checkout of its own that git cannot read: said, or TO's ":latest" would hide it
        reason = {127: "git is not installed", 124: f"git took longer than {git.TIMEOUT_S:.0f} s"
                  }.get(rc, f"git rev-parse failed (exit {rc}): a broken or foreign .git")
        get_logger().warning("git_unreadable", path=str(project), reason=reason,
                             consequence="no commit known: TO falls back to :latest and the "
                                         "image gets no revision label")
        return {}
    if rc != 0 or Path(top.strip()).resolve() != project:
        return {}
    rc, out = git.run(project, environ, "rev-parse", "HEAD", hide=hide)
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
        file_values = read_env_file(path, switch=".env") if path.is_file() else {}
        check_checkout_env(path, file_values)
    warn_unknown(environ)
    given = {k: v for k, v in switches.items() if v is not None}
    merged = {**file_values, **environ, **given}
    project_dir = cwd / merged.get("LWC_PROJECT_DIR", ".")
    known = merged.get("CI_COMMIT_SHA") or merged.get("GITHUB_SHA")  # CI says: git not asked
    hide = user_secret_names(merged)  # also those an --env-file or a switch names
    defaults = git_defaults(project_dir, environ, hide) \
        if project_dir.is_dir() and not known else {}
    gathered = {**defaults, **github_defaults(merged), **merged}
    if env_file is None and "TO" in file_values and "TO" not in environ and "TO" not in given:
        checkout_target(file_values["TO"], gathered)  # the checkout's choice of where to push
    return gathered
