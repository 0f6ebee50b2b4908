"""A docker client config of the run's own, so a login never outlives the job on a CI runner.

The user's config is copied (other registries' credentials and helpers keep working) without a
``credsStore`` (which would put our login into a keychain) and without any entry for our registry;
``docker login`` then writes into the copy, which is deleted when the run ends.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .executor import Executor
from .logs import get_logger
from .settings import Settings


@contextmanager
def private_config(settings: Settings, executor: Executor) -> Iterator[None]:
    if not settings.registry or settings.keep_login or executor.dry_run:
        yield
        return
    log = get_logger()
    directory = Path(tempfile.mkdtemp(prefix="lwc-docker-config-"))
    config = _read(settings.docker_config / "config.json")
    config.pop("credsStore", None)
    for key in ("auths", "credHelpers"):
        if isinstance(config.get(key), dict):
            config[key].pop(settings.registry, None)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "config.json").chmod(0o600)
    previous = executor.env.get("DOCKER_CONFIG")
    executor.env["DOCKER_CONFIG"] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            executor.env.pop("DOCKER_CONFIG", None)
        else:
            executor.env["DOCKER_CONFIG"] = previous
        shutil.rmtree(directory, ignore_errors=True)
        log.info("login_discarded", registry=settings.registry,
                 reason="private docker config of this run removed (LWC_KEEP_LOGIN unset)")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
