"""``lwcontainer init``: write a GitLab CI job and a CMS build script into a repository."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from ..output.logs import get_logger
from ..config.reference import Reference, InvalidReference, parse
from ..config.settings import slug
from .. import __version__
from .templates import (BUILD_SH, CAPTURE_SCRIPT, DOCKER_VERSION, GIT_INSTALL, GITIGNORE_LINES,
                        GITLAB_CI, INDEX_INSTALL, INDEX_VARIABLES, INPLACE_CI, INPLACE_PAIR, MATRIX,
                        MATRIX_ENTRY, MATRIX_IMAGE, RULES, SINGLE_IMAGE)

DEFAULT_RELEASE = "CMSSW_10_6_8_patch1"
DEFAULT_SCRAM_ARCH = "slc7_amd64_gcc820"  # the default release's
_SCRAM_ARCH_RE = re.compile(r"[a-z0-9]+_[a-z0-9]+_[a-z0-9]+")
_GIT_SOURCE_RE = re.compile(r"git\+https://[^\s\"'@]+@[A-Za-z0-9._/-]+")
DEFAULT_BASE_IMAGE = "gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest"
_RELEASE_RE = re.compile(r"CMSSW_[A-Za-z0-9_]+")


def _image(switch: str, text: str) -> Reference:
    try:
        return parse(text)
    except InvalidReference as exc:
        raise ConfigError(switch, str(exc)) from None


def _install(source: str | None, pip_flags: str = "") -> tuple[str, str]:
    """(variables, script lines) that install this very version of lwcontainer: from the
    group's package index (the job stops with a clear message while LWC_PACKAGE_INDEX is
    empty), or from a git URL pinned to a tag or commit. Never a bare, unpublished name."""
    if source is None:
        return INDEX_VARIABLES, INDEX_INSTALL.format(pip_flags=pip_flags,
                                                     version=__version__).rstrip("\n")
    if not _GIT_SOURCE_RE.fullmatch(source):
        raise ConfigError("--package-source", f"{source!r} is not git+https://HOST/PATH@TAG "
                                              "(a git URL pinned to a tag or commit)")
    return "", GIT_INSTALL.format(pip_flags=pip_flags, source=source).rstrip("\n")


def _names(matrix: tuple[str, ...]) -> dict[str, str]:
    """Base image -> the short name its image is pushed under."""
    names: dict[str, str] = {}
    for image in matrix:
        ref = _image("--matrix", image)
        name = slug(ref.path.rsplit("/", 1)[-1] + ("-" + ref.tag if ref.tag and ref.tag != "latest"
                                                   else ""))
        if name in names.values():
            raise ConfigError("--matrix", f"two base images would both be named {name!r}")
        names[image] = name
    return names


def inplace_ci(base_image: str, matrix: tuple[str, ...] = (),
               source: str | None = None) -> str:
    """Two jobs (capture in FROM, publish), or one pair per base image: each publish needs
    its own capture, and reports under its own prefix."""
    if not matrix:
        _image("--base-image", base_image)
        jobs = INPLACE_PAIR.format(suffix="", base_image=base_image,
                                   to="$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA", prefix="")
    else:
        jobs = "".join(INPLACE_PAIR.format(suffix=f"-{name}", base_image=image,
                                           to=f"$CI_REGISTRY_IMAGE/{name}:$CI_COMMIT_SHORT_SHA",
                                           prefix=f"\n    LWC_REPORT_PREFIX: {report_prefix(name)}")
                       for image, name in _names(matrix).items())
    variables, install = _install(source)
    return INPLACE_CI.format(install_variables=variables, install=install, rules=RULES,
                             jobs=jobs)


def report_prefix(name: str) -> str:
    """The report keys' prefix of one matrix image: CC7_CMS_ for cc7-cms."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_"


def gitlab_ci(base_image: str, matrix: tuple[str, ...] = (), source: str | None = None) -> str:
    """The docker engine's CI job: one image, or a ``parallel:matrix`` job with one entry per
    base image."""
    variables, install = _install(source, pip_flags="--break-system-packages ")
    common = dict(docker_version=DOCKER_VERSION, install_variables=variables, install=install,
                  rules=RULES)
    if not matrix:
        _image("--base-image", base_image)
        return GITLAB_CI.format(**common, matrix="",
                                image_variables=SINGLE_IMAGE.format(base_image=base_image))
    names = _names(matrix)
    entries = "".join(MATRIX_ENTRY.format(base_image=image, name=name,
                                          prefix=report_prefix(name))
                      for image, name in names.items())
    return GITLAB_CI.format(**common, matrix=MATRIX.format(entries=entries),
                            image_variables=MATRIX_IMAGE)


def analysis_dirs(directory: Path) -> str:
    """The checkout's top-level directories (not hidden): what build.sh copies by default."""
    if not directory.is_dir():
        return ""
    return " ".join(sorted(p.name for p in directory.iterdir()
                           if p.is_dir() and not p.name.startswith(".")
                           and re.fullmatch(r"[A-Za-z0-9_.+-]+", p.name)))


def files(release: str, base_image: str, matrix: tuple[str, ...] = (),
          engine: str = "inplace", directory: Path | None = None,
          scram_arch: str = DEFAULT_SCRAM_ARCH, source: str | None = None,
          capture_script: str = "") -> dict[str, tuple[str, int]]:
    """Relative path -> (text, mode) of everything ``init`` writes; ``capture_script`` is the
    in-place engine's capture script, rendered (the caller has it from the engine: ci/ sits
    below the engines)."""
    if not _RELEASE_RE.fullmatch(release):
        raise ConfigError("--cmssw-release", f"{release!r} is not a CMSSW release name")
    if not _SCRAM_ARCH_RE.fullmatch(scram_arch):
        raise ConfigError("--scram-arch", f"{scram_arch!r} is not an architecture such as "
                                          f"{DEFAULT_SCRAM_ARCH}")
    if engine == "docker":
        ci = gitlab_ci(base_image, matrix, source)
    elif engine == "inplace":
        ci = inplace_ci(base_image, matrix, source)
    else:
        raise ConfigError("LWC_ENGINE", f"{engine!r}: init writes jobs for docker or inplace")
    build = BUILD_SH.format(cmssw_release=release, scram_arch=scram_arch,
                            analysis_dirs=analysis_dirs(directory) if directory else "")
    out = {".gitlab-ci.yml": (ci, 0o644), ".gitlab/build.sh": (build, 0o755)}
    if engine == "inplace":
        if not capture_script:
            raise ValueError("the inplace scaffold needs the capture script")
        out[CAPTURE_SCRIPT] = (capture_script, 0o755)
    return out


def ignore_outputs(directory: Path) -> bool:
    """Add lwcontainer's outputs (report, layer) to .gitignore; True if it changed."""
    path = directory / ".gitignore"
    text = path.read_text() if path.is_file() else ""
    missing = [line for line in GITIGNORE_LINES if line not in text.splitlines()]
    if not missing:
        return False
    path.write_text(text + ("" if not text or text.endswith("\n") else "\n")
                    + "\n".join(missing) + "\n")
    return True


def init(directory: Path, release: str, base_image: str, force: bool,
         matrix: tuple[str, ...] = (), engine: str = "inplace",
         scram_arch: str = DEFAULT_SCRAM_ARCH, source: str | None = None,
         capture_script: str = "") -> list[Path]:
    planned = {directory / name: content
               for name, content in files(release, base_image, matrix, engine, directory,
                                          scram_arch, source, capture_script).items()}
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
    if ignore_outputs(directory):
        log.info("ignored", path=str(directory / ".gitignore"), entries=list(GITIGNORE_LINES))
    return list(planned)
