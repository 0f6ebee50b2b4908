"""A docker client config of the run's own, so a login never outlives the job on a CI runner.

It starts without credentials: of the user's config only the proxy settings and the current
context are copied, and credential storage is pinned to the file (``credsStore`` empty), so
``docker login`` writes into it and not into a keychain, and no other registry's stored login can
be used by this run. The user's contexts (``contexts/``: each one's endpoint and TLS files) are
reached through a link to the user's own directory, only read: a context the user's ``docker``
picks (``DOCKER_CONTEXT``, or ``currentContext``) picks the same engine for the run's steps.
The directory is chosen before the first step (its path is part of every step's environment),
created when the run starts and deleted when it ends; one left by a run that was killed is
removed by the next.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ...config.settings import Settings
from ...output.logs import get_logger

PREFIX = "lwc-docker-config-"
#: what the private config copies from the user's: proxies, and the context ``docker`` uses
CARRIED = ("proxies", "currentContext")
CONTEXTS = "contexts"  # the docker CLI's context store, below its config directory


def private_path(settings: Settings, prefix: str = PREFIX,
                 parent: Path | None = None) -> Path | None:
    """Where this run's private config will be (in ``parent``, by default $TMPDIR), or None
    when the run uses the user's own."""
    if not settings.registry or settings.keep_login:
        return None
    return (parent or temporary_dir()) / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"


def temporary_dir() -> Path:
    return Path(tempfile.gettempdir())


@contextmanager
def private_config(settings: Settings, directory: Path | None, dry_run: bool) -> Iterator[None]:
    if directory is None or dry_run:
        yield
        return
    log = get_logger()
    remove_stale(directory.parent)
    directory.mkdir(mode=0o700)
    try:
        user = _read(settings.docker_config / "config.json")
        config = {"credsStore": "", **{key: user[key] for key in CARRIED if key in user}}
        fd = os.open(directory / "config.json",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(config, file)
        contexts = settings.docker_config / CONTEXTS
        if contexts.is_dir():
            (directory / CONTEXTS).symlink_to(contexts.resolve(), target_is_directory=True)
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        log.info("login_discarded", registry=settings.registry,
                 reason="private docker config of this run removed (LWC_KEEP_LOGIN unset)")


def remove_stale(parent: Path, prefix: str = PREFIX) -> None:
    """Private configs whose run no longer exists (killed with SIGKILL) hold a login: remove."""
    for path in parent.glob(f"{prefix}*"):
        found = re.match(rf"{prefix}(\d+)-", path.name)
        if found and not Path(f"/proc/{found.group(1)}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
