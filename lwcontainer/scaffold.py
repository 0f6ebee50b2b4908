"""``lwcontainer init``: write a GitLab CI job and a CMS build script into a repository."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError
from .logs import get_logger
from .reference import ReferenceError, parse
from .templates import BUILD_SH, DOCKER_VERSION, GITLAB_CI

DEFAULT_RELEASE = "CMSSW_10_6_8_patch1"
DEFAULT_BASE_IMAGE = "gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest"
_RELEASE_RE = re.compile(r"CMSSW_[A-Za-z0-9_]+")


def files(release: str, base_image: str) -> dict[str, tuple[str, int]]:
    """Relative path -> (text, mode) of everything ``init`` writes."""
    if not _RELEASE_RE.fullmatch(release):
        raise ConfigError("--cmssw-release", f"{release!r} is not a CMSSW release name")
    try:
        parse(base_image)
    except ReferenceError as exc:
        raise ConfigError("--base-image", str(exc)) from None
    return {
        ".gitlab-ci.yml": (GITLAB_CI.format(docker_version=DOCKER_VERSION, base_image=base_image),
                           0o644),
        ".gitlab/build.sh": (BUILD_SH.format(cmssw_release=release), 0o755),
    }


def init(directory: Path, release: str, base_image: str, force: bool) -> list[Path]:
    planned = {directory / name: content for name, content in files(release, base_image).items()}
    existing = [path for path in planned if path.exists()]
    if existing and not force:
        raise ConfigError("init", f"{', '.join(map(str, existing))} already exist(s); nothing "
                                  "written (--force overwrites)")
    log = get_logger()
    for path, (text, mode) in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        log.info("wrote", path=str(path), overwritten=path in existing)
    return list(planned)
