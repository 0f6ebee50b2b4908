"""``lwcontainer init``: write a GitLab CI job and a CMS build script into a repository."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError
from ..output.files import write_below
from ..output.logs import get_logger
from ..config.reference import Reference, InvalidReference, parse
from ..config.secrets import is_secret_name
from ..config.settings import slug
from .. import __version__
from .templates import (BUILD_SH, CAPTURE_SCRIPT, COMPONENT_DOCKER, COMPONENT_INPLACE,
                        COMPONENT_INSTALL, COMPONENT_SPEC, COMPONENT_VARIABLES, DEFAULT_BUILD_ENV,
                        DEFAULT_BUILD_SCRIPT, DOCKER_VERSION, GIT_INSTALL, GITIGNORE_LINES,
                        GITLAB_CI, INCLUDE_CI, INDEX_INSTALL, INDEX_VARIABLES, INPLACE_CI,
                        INPLACE_PAIR, LWC, MATRIX, MATRIX_ENTRY, MATRIX_IMAGE, RULES,
                        SINGLE_IMAGE, WORKFLOW)

DEFAULT_RELEASE = "CMSSW_10_6_8_patch1"
DEFAULT_SCRAM_ARCH = "slc7_amd64_gcc820"  # the default release's
_SCRAM_ARCH_RE = re.compile(r"[a-z0-9]+_[a-z0-9]+_[a-z0-9]+")
_GIT_SOURCE_RE = re.compile(r"git\+https://[^\s\"'@]+@[A-Za-z0-9._/-]+")
DEFAULT_BASE_IMAGE = "gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest"
_RELEASE_RE = re.compile(r"CMSSW_[A-Za-z0-9_]+")
_PATH_RE = re.compile(r"[A-Za-z0-9_.+/-]+")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPONENT_RE = re.compile(r"[A-Za-z0-9.$_{}-]+(/[A-Za-z0-9._-]+)+@[A-Za-z0-9._~-]+")


def _image(switch: str, text: str) -> Reference:
    try:
        return parse(text)
    except InvalidReference as exc:
        raise ConfigError(switch, str(exc)) from None


#: The engines ``init`` writes CI jobs for (the first is its default).
SCAFFOLD_ENGINES = ("inplace", "docker")


@dataclass(frozen=True)
class Options:
    """What ``init`` is asked to write (its switches)."""

    release: str = DEFAULT_RELEASE
    base_image: str = DEFAULT_BASE_IMAGE
    matrix: tuple[str, ...] = ()
    engine: str = "inplace"
    scram_arch: str = DEFAULT_SCRAM_ARCH
    source: str | None = None  # --package-source: a pinned git URL; None: lwcontainer==VERSION
    build_script: str = DEFAULT_BUILD_SCRIPT
    build_env: str = DEFAULT_BUILD_ENV
    component: str | None = None  # --component PATH@VERSION: include lwcontainer's component
    #: the in-place engine's capture script, rendered: the caller has it from the engine (ci/
    #: sits below the engines and imports none of them)
    capture_script: str = field(default="", repr=False)

    def check(self) -> Options:
        if not _RELEASE_RE.fullmatch(self.release):
            raise ConfigError("--cmssw-release", f"{self.release!r} is not a CMSSW release name")
        if not _SCRAM_ARCH_RE.fullmatch(self.scram_arch):
            raise ConfigError("--scram-arch", f"{self.scram_arch!r} is not an architecture such "
                                              f"as {DEFAULT_SCRAM_ARCH}")
        if self.engine not in SCAFFOLD_ENGINES:
            raise ConfigError("LWC_ENGINE", f"{self.engine!r}: init writes jobs for docker or "
                                            "inplace")
        if self.source is not None and not _GIT_SOURCE_RE.fullmatch(self.source):
            raise ConfigError("--package-source", f"{self.source!r} is not git+https://HOST/PATH"
                                                  "@TAG (a git URL pinned to a tag or commit)")
        path = PurePosixPath(self.build_script)
        if (not _PATH_RE.fullmatch(self.build_script) or path.is_absolute()
                or ".." in path.parts or self.build_script.endswith("/")):
            raise ConfigError("--build-script", f"{self.build_script!r}: give a relative path "
                                                "inside the project, such as "
                                                f"{DEFAULT_BUILD_SCRIPT}")
        for name in self.build_env_names:
            if not _NAME_RE.fullmatch(name):
                raise ConfigError("--build-env", f"{name!r} is not a variable name")
            if is_secret_name(name):
                raise ConfigError("--build-env", f"{name} holds a secret; it never goes into "
                                                 "the build")
        if self.component is not None:
            if not _COMPONENT_RE.fullmatch(self.component):
                raise ConfigError("--component", f"{self.component!r} is not HOST/PATH@VERSION "
                                                 "(e.g. gitlab.cern.ch/cms-cloud/lwcontainer@"
                                                 f"{__version__})")
            if self.matrix:
                raise ConfigError("--component", "give --matrix without --component (the "
                                                 "component builds one base image)")
        return self

    @property
    def build_env_names(self) -> list[str]:
        return [n for n in re.split(r"[\s,]+", self.build_env) if n]


def _install(source: str | None, pip_flags: str = "") -> tuple[str, str]:
    """(variables, script lines) that install this very version of lwcontainer into the job's
    own virtual environment: from the group's package index (the job stops with a clear
    message while LWC_PACKAGE_INDEX is empty), or from a git URL pinned to a tag or commit.
    Never a bare, unpublished name."""
    if source is None:
        return INDEX_VARIABLES, INDEX_INSTALL.replace("{version}", __version__).rstrip("\n")
    return "", GIT_INSTALL.replace("{source}", source).rstrip("\n")


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


def _common(o: Options) -> dict[str, str]:
    variables, install = _install(o.source)
    return dict(workflow=WORKFLOW, rules=RULES, install_variables=variables, install=install,
                build_script=o.build_script, build_env=" ".join(o.build_env_names), lwc=LWC)


def inplace_ci(o: Options) -> str:
    """Two jobs (capture in FROM, publish), or one pair per base image: each publish needs
    its own capture, and reports under its own prefix."""
    if not o.matrix:
        _image("--base-image", o.base_image)
        jobs = INPLACE_PAIR.format(suffix="", base_image=o.base_image,
                                   to="$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA", prefix="")
    else:
        jobs = "".join(INPLACE_PAIR.format(suffix=f"-{name}", base_image=image,
                                           to=f"$CI_REGISTRY_IMAGE/{name}:$CI_COMMIT_SHORT_SHA",
                                           prefix=f"\n    LWC_REPORT_PREFIX: {report_prefix(name)}")
                       for image, name in _names(o.matrix).items())
    return INPLACE_CI.format(**_common(o), jobs=jobs)


def report_prefix(name: str) -> str:
    """The report keys' prefix of one matrix image: CC7_CMS_ for cc7-cms."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_"


def gitlab_ci(o: Options) -> str:
    """The docker engine's CI job: one image, or a ``parallel:matrix`` job with one entry per
    base image."""
    common = dict(_common(o), docker_version=DOCKER_VERSION)
    if not o.matrix:
        _image("--base-image", o.base_image)
        return GITLAB_CI.format(**common, matrix="",
                                image_variables=SINGLE_IMAGE.format(base_image=o.base_image))
    names = _names(o.matrix)
    entries = "".join(MATRIX_ENTRY.format(base_image=image, name=name,
                                          prefix=report_prefix(name))
                      for image, name in names.items())
    return GITLAB_CI.format(**common, matrix=MATRIX.format(entries=entries),
                            image_variables=MATRIX_IMAGE)


def include_ci(o: Options) -> str:
    """The project's pipeline as an include of lwcontainer's CI/CD component."""
    _image("--base-image", o.base_image)
    path, version = (o.component or "").rsplit("@", 1)
    return INCLUDE_CI.format(
        component=o.component, engine=o.engine, workflow=WORKFLOW, path=path, version=version,
        variables="variables:\n" + INDEX_VARIABLES if o.source is None else "",
        base_image=o.base_image, runner_tag=RUNNER_TAGS[o.engine],
        source=o.source or f"lwcontainer=={__version__}", build_script=o.build_script,
        build_env=" ".join(o.build_env_names))


RUNNER_TAGS = {"inplace": "cvmfs", "docker": "privileged-dind"}
RUNNER_HELP = {"inplace": "the tag of runners that mount /cvmfs into the job",
               "docker": "the tag of a runner of yours that allows privileged docker-in-docker "
                         "services"}


def component_template(engine: str) -> str:
    """templates/<engine>.yml of lwcontainer's CI/CD component: a spec header with the inputs,
    then the same jobs and rules as the scaffold, set by those inputs."""
    spec = COMPONENT_SPEC.format(engine=engine, base_image=DEFAULT_BASE_IMAGE,
                                 runner_help=RUNNER_HELP[engine], runner_tag=RUNNER_TAGS[engine],
                                 version=__version__, build_script=DEFAULT_BUILD_SCRIPT,
                                 build_env=DEFAULT_BUILD_ENV)
    parts = dict(variables=COMPONENT_VARIABLES, rules=RULES, lwc=LWC,
                 install=COMPONENT_INSTALL.rstrip("\n"))
    if engine == "inplace":
        return spec + COMPONENT_INPLACE.format(**parts)
    return spec + COMPONENT_DOCKER.format(**parts, docker_version=DOCKER_VERSION)


def analysis_dirs(directory: Path) -> str:
    """The checkout's top-level directories (not hidden): what build.sh copies by default."""
    if not directory.is_dir():
        return ""
    return " ".join(sorted(p.name for p in directory.iterdir()
                           if p.is_dir() and not p.name.startswith(".")
                           and re.fullmatch(r"[A-Za-z0-9_.+-]+", p.name)))


def dotenv(directory: Path, o: Options) -> str | None:
    """The project's .env with FROM set, so a local run builds on the base the CI file names
    (the matrix's first base); None when it sets FROM already."""
    base = o.matrix[0] if o.matrix else o.base_image
    path = directory / ".env"
    text = path.read_text() if path.is_file() else ""
    if any(re.match(r"\s*(export\s+)?FROM\s*=", line) for line in text.splitlines()):
        return None
    note = "# the base image of a local run (`lwcontainer init --base-image`)\n"
    return text + ("" if not text or text.endswith("\n") else "\n") + note + f"FROM={base}\n"


def files(o: Options, directory: Path | None = None) -> dict[str, tuple[str, int]]:
    """Relative path -> (text, mode) of everything ``init`` writes."""
    o.check()
    if o.component:
        ci = include_ci(o)
    elif o.engine == "docker":
        ci = gitlab_ci(o)
    else:
        ci = inplace_ci(o)
    build = BUILD_SH.format(cmssw_release=o.release, scram_arch=o.scram_arch,
                            analysis_dirs=analysis_dirs(directory) if directory else "")
    out = {".gitlab-ci.yml": (ci, 0o644), o.build_script: (build, 0o755)}
    if o.engine == "inplace":
        if not o.capture_script:
            raise ValueError("the inplace scaffold needs the capture script")
        out[CAPTURE_SCRIPT] = (o.capture_script, 0o755)
    return out


def ignore_outputs(directory: Path) -> bool:
    """Add lwcontainer's outputs (report, layer) to .gitignore; True if it changed."""
    path = directory / ".gitignore"
    text = path.read_text() if path.is_file() else ""
    missing = [line for line in GITIGNORE_LINES if line not in text.splitlines()]
    if not missing:
        return False
    write_below(directory, path, text + ("" if not text or text.endswith("\n") else "\n")
                + "\n".join(missing) + "\n", "init")
    return True


def init(directory: Path, options: Options, force: bool) -> list[Path]:
    planned = {directory / name: content
               for name, content in files(options, directory).items()}
    existing = [path for path in planned if path.exists() or path.is_symlink()]
    if existing and not force:
        raise ConfigError("init", f"{', '.join(map(str, existing))} already exist(s); nothing "
                                  "written (--force overwrites)")
    env_text = dotenv(directory, options)  # .env is added to, never replaced
    if env_text is not None:
        planned[directory / ".env"] = (env_text, 0o644)
    log = get_logger()
    for path, (text, mode) in planned.items():  # never through a link (output/files.py)
        write_below(directory, path, text, "init", mode)
        log.info("wrote", path=str(path), overwritten=path in existing)
    if ignore_outputs(directory):
        log.info("ignored", path=str(directory / ".gitignore"), entries=list(GITIGNORE_LINES))
    return list(planned)
