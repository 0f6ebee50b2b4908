"""Every setting in one table, and the frozen ``Settings`` object built from a plain mapping.

Sources, lowest to highest: defaults, a ``.env`` file, the environment, command-line switches.
``sources.py`` merges them into one mapping; ``Settings.from_mapping`` validates it. Nothing else
in the package reads ``os.environ``.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError
from .platform import ci_style
from .reference import (REGISTRY_RE, InvalidReference, Reference, extra_target, parse,
                        parse_target)
from .tags import derived_tags
from .secrets import USER_SECRETS, is_secret_name, secret_values, user_secret_names

DEFAULT_AUTOMOUNTER_IMAGE = "gitlab-registry.cern.ch/vcs/cvmfs-automounter:master"
PASSWORD_VARIABLES = ("CI_REGISTRY_PASSWORD", "CI_JOB_TOKEN", "CI_BUILD_TOKEN")
PULL_POLICIES = ("missing", "always", "never")
TAG_RULES = ("auto", "always", "never")
PUSH_POLICIES = ("auto", "never")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "console", "json")
CVMFS_SOURCES = ("auto", "automounter", "host", "none")
#: where images go that are not pushed: the default TO outside CI, and what a checkout may name
LOCAL_NAMESPACE = "lwcontainer/"
#: LWC_ENGINE's values: each names a folder of lwcontainer/engines/ (``auto`` chooses one).
ENGINE_NAMES = ("docker", "podman", "inplace")
DOCKER, PODMAN, INPLACE = ENGINE_NAMES
AUTO_ENGINE = "auto"


@dataclass(frozen=True)
class Spec:
    """One setting: its variable, its command-line switch, its default and what it means."""

    variable: str
    switch: str
    default: str  # the value used when no source sets it ("" = unset)
    help: str
    secret: bool = False
    shown: str = ""  # what --help and README show instead, where the default is computed
    dotenv: bool = False  # may the checkout's .env set it? (build inputs only; never the
    #                       engine, its address, privileges, host paths or where files go)

    @property
    def display(self) -> str:
        return self.shown or self.default


SPECS: tuple[Spec, ...] = (
    Spec("LWC_ENGINE", "--engine", AUTO_ENGINE, "auto (a Docker engine if one answers, else "
         "podman; in CI docker) | docker (a Docker engine: workstation, privileged dind runner) "
         "| podman (rootful or rootless, no daemon: Fedora, AlmaLinux, RHEL, no root) | inplace "
         "(no engine, no privileges: build inside FROM on the runner, publish through the "
         "registry API)"),
    Spec("FROM", "--from", "", "base image the build runs in", shown="(required)", dotenv=True),
    Spec("TO", "--to", "", "image reference to tag and push; from the checkout's .env only "
         "CI_REGISTRY_IMAGE or a repository below it (outside CI: a local name under "
         "lwcontainer/, not pushed)",
         shown="${CI_REGISTRY_IMAGE}:${CI_COMMIT_SHORT_SHA}; "
               "locally lwcontainer/<dir>:<git short sha|latest>", dotenv=True),
    Spec("LWC_EXTRA_TAGS", "--extra-tags", "", "more tags, comma or space separated: "
         "bare tags for TO's repository or whole references", dotenv=True),
    Spec("LWC_TAG_LATEST", "--tag-latest", "auto", "auto (latest on the default branch, the git "
         "tag on tag pipelines) | always | never; derived tags are sanitised", dotenv=True),
    Spec("LWC_PROJECT_DIR", "--project-dir", ".", "the analysis checkout; mounted at the same path "
         "and the build's working directory"),
    Spec("LWC_BUILD_SCRIPT", "--build-script", ".gitlab/build.sh",
         "build script, relative to the project directory, run with /bin/bash", dotenv=True),
    Spec("LWC_BUILD_ENV", "--build-env", "", "names of variables passed into the build (comma "
         "or space separated): each value comes from lwcontainer's environment and never goes "
         "on a command line; a secret is refused. Docker and podman keep them in the image's "
         "environment (the commit does), so one with credentials in it is refused before the "
         "commit"),
    Spec(USER_SECRETS, "--secret-variables", "", "names of the user's own secret variables "
         "(comma or space separated), besides the job's (CI_JOB_TOKEN, CI_REPOSITORY_URL, "
         "DOCKER_AUTH_CONFIG, CI_JOB_JWT*, … and every name with PASSWORD, SECRET, TOKEN, "
         "PASSWD or CREDENTIAL): masked in logs, kept from every child process, refused in "
         "LWC_BUILD_ENV, searched for in the in-place layer"),
    Spec("CI_REGISTRY", "--registry", "", "registry to log in to; no registry: no login, no push"),
    Spec("CI_REGISTRY_USER", "--registry-user", "", "registry user name"),
    Spec("CI_REGISTRY_PASSWORD", "--registry-password", "",
         "registry password, else CI_JOB_TOKEN, else CI_BUILD_TOKEN; sent on stdin only",
         secret=True),
    Spec("LWC_INSECURE_REGISTRIES", "--insecure-registries", "",
         "registries (host[:port]) without TLS verification besides the loopback range, comma "
         "or space separated (inplace: plain HTTP; podman: --tls-verify=false)"),
    Spec("LWC_PULL", "--pull", "missing", "pull FROM: missing | always | never", dotenv=True),
    Spec("LWC_DIND_HOST", "--dind-host", "",
         "host name of the dind service, used in a CI job when DOCKER_HOST is unset and there "
         "is no local engine socket", shown="docker (localhost on Kubernetes)"),
    Spec("LWC_LOCAL_SOCKET", "--local-socket", "/var/run/docker.sock",
         "the local engine socket: in a CI job without DOCKER_HOST, lwcontainer uses it when it "
         "exists, else looks for the dind service"),
    Spec("DOCKER_TLS_CERTDIR", "--docker-tls-certdir", "", "dind TLS certificates: wait for "
         "client/{ca,cert,key}.pem and use port 2376 with TLS; unset: port 2375"),
    Spec("LWC_DOCKER_TIMEOUT", "--docker-timeout", "60", "seconds to wait for the engine, and "
         "that any other docker or podman call may take", dotenv=True),
    Spec("LWC_TRANSFER_TIMEOUT", "--transfer-timeout", "1800",
         "seconds one pull, push or commit may take before it is stopped (and retried)",
         dotenv=True),
    Spec("LWC_BUILD_TIMEOUT", "--build-timeout", "", "seconds the build may take; unset: no "
         "limit", dotenv=True),
    Spec("LWC_CVMFS", "--cvmfs", "auto", "where /cvmfs comes from: auto (host when every "
         "repository is under LWC_CVMFS_HOST_DIR and the engine is local, else automounter) | "
         "automounter | host | none", dotenv=True),
    Spec("LWC_CVMFS_HOST_DIR", "--cvmfs-host-dir", "/cvmfs",
         "the host's CVMFS, bind-mounted read-only in host mode"),
    Spec("LWC_CVMFS_MOUNTS", "--cvmfs-mounts", "/cvmfsmounts",
         "host directory the automounter shares (must be on a shared mount)"),
    Spec("LWC_CVMFS_REPOS", "--cvmfs-repos", "cms.cern.ch",
         "CVMFS repositories to wait for, comma or space separated", dotenv=True),
    Spec("LWC_CVMFS_TIMEOUT", "--cvmfs-timeout", "300", "seconds to wait for CVMFS", dotenv=True),
    Spec("LWC_AUTOMOUNTER_IMAGE", "--automounter-image", DEFAULT_AUTOMOUNTER_IMAGE,
         "CVMFS automounter image"),
    Spec("LWC_AUTOMOUNTER_NAME", "--automounter-name", "cvmfs",
         "automounter container name (shared by every run on the engine)"),
    Spec("LWC_AUTOMOUNTER_OPTIONS", "--automounter-options", "--privileged",
         "docker run options that replace --privileged for the automounter (shell-split)"),
    Spec("LWC_KEEP_AUTOMOUNTER", "--keep-automounter", "",
         "1/true/yes: leave an automounter this run started running"),
    Spec("LWC_KEEP_LOGIN", "--keep-login", "",
         "1/true/yes: log in to the user's docker config and leave the login there; by default "
         "the run logs in to a private config that is deleted at the end"),
    Spec("LWC_PUSH", "--push", "auto", "auto (push when CI_REGISTRY is set) | never (build "
         "and report, push nothing: merge requests, other branches)", dotenv=True),
    Spec("LWC_PUSH_RETRIES", "--push-retries", "3", "push attempts after the first, with backoff",
         dotenv=True),
    Spec("LWC_REPORT", "--report", "./lwcontainer.env",
         "dotenv report (GitLab artifacts:reports:dotenv), relative to the working directory; "
         "it must lie inside the project directory (or the working directory): else exit 2"),
    Spec("LWC_REPORT_PREFIX", "--report-prefix", "", "prefix of every report key (e.g. "
         "CC7_ gives CC7_LWC_IMAGE): one per image of a matrix, so later jobs can tell them "
         "apart"),
    Spec("LWC_PROGRESS_INTERVAL", "--progress-interval", "10",
         "seconds between 'waiting' log lines during long waits when not on a terminal",
         dotenv=True),
    Spec("LWC_LOG_FORMAT", "--log-format", "auto", "auto (console on a terminal) | console | json",
         dotenv=True),
    Spec("LWC_LOG_LEVEL", "--log-level", "info", "debug | info | warning | error", dotenv=True),
    Spec("CI_PROJECT_NAME", "--project-name", "", "names the build container",
         shown="<project directory name>"),
    Spec("CI_JOB_ID", "--job-id", "", "names the build container"),
    Spec("CI_PROJECT_URL", "--project-url", "", "label org.opencontainers.image.source"),
    Spec("CI_COMMIT_SHA", "--commit-sha", "", "label org.opencontainers.image.revision",
         shown="<git HEAD>"),
    Spec("CI_COMMIT_SHORT_SHA", "--commit-short-sha", "", "default tag of TO",
         shown="<git short HEAD>"),
    Spec("CI_REGISTRY_IMAGE", "--registry-image", "", "default repository of TO"),
    Spec("CI_COMMIT_BRANCH", "--branch", "", "branch of the pipeline (LWC_TAG_LATEST=auto)"),
    Spec("CI_DEFAULT_BRANCH", "--default-branch", "", "the project's default branch"),
    Spec("CI_COMMIT_TAG", "--git-tag", "", "git tag of a tag pipeline: pushed as a tag too"),
    Spec("SOURCE_DATE_EPOCH", "--source-date-epoch", "",
         "label org.opencontainers.image.created (seconds since 1970), for reproducibility",
         dotenv=True),
    Spec("CI_COMMIT_TIMESTAMP", "--commit-timestamp", "",
         "the commit's time (ISO 8601): label ...created when SOURCE_DATE_EPOCH is unset"),
)
SPEC_BY_NAME = {spec.variable: spec for spec in SPECS}
#: Settings by what they are about: --help shows each subcommand the groups it uses.
GROUPS: dict[str, tuple[str, ...]] = {
    "Image": ("LWC_ENGINE", "FROM", "TO", "LWC_EXTRA_TAGS", "LWC_TAG_LATEST"),
    "Build": ("LWC_PROJECT_DIR", "LWC_BUILD_SCRIPT", "LWC_BUILD_ENV", USER_SECRETS, "LWC_PULL",
              "LWC_BUILD_TIMEOUT"),
    "Registry": ("CI_REGISTRY", "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD", "LWC_PUSH",
                 "LWC_INSECURE_REGISTRIES", "LWC_KEEP_LOGIN", "LWC_PUSH_RETRIES",
                 "LWC_TRANSFER_TIMEOUT"),
    "Engine": ("LWC_DIND_HOST", "LWC_LOCAL_SOCKET", "DOCKER_TLS_CERTDIR", "LWC_DOCKER_TIMEOUT"),
    "CVMFS": ("LWC_CVMFS", "LWC_CVMFS_HOST_DIR", "LWC_CVMFS_MOUNTS", "LWC_CVMFS_REPOS",
              "LWC_CVMFS_TIMEOUT", "LWC_AUTOMOUNTER_IMAGE", "LWC_AUTOMOUNTER_NAME",
              "LWC_AUTOMOUNTER_OPTIONS", "LWC_KEEP_AUTOMOUNTER"),
    "Output": ("LWC_REPORT", "LWC_REPORT_PREFIX", "LWC_PROGRESS_INTERVAL", "LWC_LOG_FORMAT",
               "LWC_LOG_LEVEL"),
    "CI": ("CI_REGISTRY_IMAGE", "CI_COMMIT_SHORT_SHA", "CI_COMMIT_BRANCH", "CI_DEFAULT_BRANCH",
           "CI_COMMIT_TAG", "CI_PROJECT_NAME", "CI_JOB_ID"),
    "Labels": ("CI_PROJECT_URL", "CI_COMMIT_SHA", "SOURCE_DATE_EPOCH", "CI_COMMIT_TIMESTAMP"),
}
#: What the checkout's .env may set; everything else there is refused (config/sources.py).
DOTENV_ALLOWED = frozenset(spec.variable for spec in SPECS if spec.dotenv)

_REPO_RE = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", re.ASCII)
_TRUE = {"1", "true", "yes", "on", "y"}


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def split_list(value: str) -> tuple[str, ...]:
    return tuple(item for item in re.split(r"[,\s]+", value.strip()) if item)


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes: safe in image and container names."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "project"


@dataclass(frozen=True)
class Settings:
    engine: str
    from_image: Reference | None
    to_image: Reference
    extra_tags: tuple[Reference, ...]
    project_dir: Path
    build_script: str
    build_env: tuple[str, ...]
    registry: str | None
    registry_user: str | None
    registry_password: str | None = field(repr=False)
    insecure_registries: tuple[str, ...]
    pull: str
    docker_timeout: float
    local_socket: Path
    transfer_timeout: float
    build_timeout: float | None
    cvmfs: str
    cvmfs_host_dir: str
    cvmfs_mounts: str
    cvmfs_repos: tuple[str, ...]
    cvmfs_timeout: float
    automounter_image: Reference
    automounter_name: str
    automounter_options: tuple[str, ...]
    keep_automounter: bool
    keep_login: bool
    docker_config: Path
    push: str
    push_retries: int
    report: Path
    report_prefix: str
    progress_interval: float
    log_format: str
    log_level: str
    project_name: str
    job_id: str | None
    project_url: str | None
    commit_sha: str | None
    tag_latest: str
    branch: str | None
    default_branch: str | None
    git_tag: str | None
    created: datetime | None
    ci_style: str | None
    dind_host: str | None
    docker_tls_certdir: str | None
    secret_variables: tuple[str, ...] = ()  # LWC_SECRET_VARIABLES: the user's own secrets
    report_root: Path | None = None  # the directory the report lies in: no link below it
    engine_answered: str = ""  # the Docker engine's version, when choosing it just heard it

    @property
    def push_enabled(self) -> bool:
        return self.registry is not None and self.push != "never"

    @property
    def no_push_reason(self) -> str:
        if self.push == "never":
            return "LWC_PUSH=never"
        return "no registry configured (CI_REGISTRY unset)"

    @property
    def targets(self) -> tuple[Reference, ...]:
        """TO first, then the extra tags, then the derived ones (LWC_TAG_LATEST), no repeats."""
        derived = derived_tags(self.tag_latest, self.branch, self.default_branch, self.git_tag)
        seen: dict[str, Reference] = {}
        for ref in (self.to_image, *self.extra_tags,
                    *(self.to_image.with_tag(tag) for tag in derived)):
            seen.setdefault(str(ref), ref)
        return tuple(seen.values())

    @classmethod
    def from_mapping(cls, env: Mapping[str, str], cwd: Path | None = None,
                     require_from: bool = True) -> Settings:
        """Validate ``env`` (variable name -> text) into Settings, or raise ConfigError.
        Defaults come from SPECS; each group of settings is read by a helper below."""
        get = _Getter(env)
        cwd = Path(cwd or Path.cwd())
        project_dir = (cwd / get.text("LWC_PROJECT_DIR")).resolve()
        if not project_dir.is_dir():
            raise ConfigError("LWC_PROJECT_DIR", f"{project_dir} is not a directory")
        if ":" in str(project_dir) or "," in str(project_dir):
            raise ConfigError("LWC_PROJECT_DIR", f"{project_dir} contains ':' or ',', which a "
                                                 "docker volume cannot mount; move or link the "
                                                 "checkout to a plain path")
        from_image = _from_image(get, require_from)
        to_image = get.reference("TO", parse_target, default=_default_to(get, project_dir))
        extra = tuple(get.convert("LWC_EXTRA_TAGS", tag, lambda t: extra_target(t, to_image))
                      for tag in split_list(get.text("LWC_EXTRA_TAGS")))
        settings = cls(
            engine=get.choice("LWC_ENGINE", (AUTO_ENGINE, *ENGINE_NAMES)),
            from_image=from_image,
            to_image=to_image,
            extra_tags=extra,
            project_dir=project_dir,
            build_script=_build_script(get.text("LWC_BUILD_SCRIPT"), project_dir,
                                       check=require_from),
            build_env=_build_env(get, env),
            **_registry(get, env),
            insecure_registries=tuple(_registry_host("LWC_INSECURE_REGISTRIES", host) for host in
                                      split_list(get.text("LWC_INSECURE_REGISTRIES"))),
            pull=get.choice("LWC_PULL", PULL_POLICIES),
            docker_timeout=get.number("LWC_DOCKER_TIMEOUT"),
            local_socket=Path(_absolute(get, "LWC_LOCAL_SOCKET")),
            transfer_timeout=get.number("LWC_TRANSFER_TIMEOUT"),
            build_timeout=(get.number("LWC_BUILD_TIMEOUT")
                           if get.optional("LWC_BUILD_TIMEOUT") is not None else None),
            **_cvmfs(get),
            **_automounter(get),
            keep_login=truthy(get.optional("LWC_KEEP_LOGIN")),
            docker_config=Path(get.optional("DOCKER_CONFIG")
                               or Path(get.text("HOME", "/root")) / ".docker"),
            push=get.choice("LWC_PUSH", PUSH_POLICIES),
            push_retries=int(get.number("LWC_PUSH_RETRIES", integer=True)),
            **_report(get, cwd, project_dir),
            report_prefix=_report_prefix(get),
            progress_interval=max(get.number("LWC_PROGRESS_INTERVAL"), 0.1),
            log_format=get.choice("LWC_LOG_FORMAT", LOG_FORMATS),
            log_level=get.choice("LWC_LOG_LEVEL", LOG_LEVELS),
            project_name=get.optional("CI_PROJECT_NAME") or project_dir.name,
            job_id=get.optional("CI_JOB_ID"),
            project_url=get.optional("CI_PROJECT_URL"),
            commit_sha=get.optional("CI_COMMIT_SHA"),
            tag_latest=get.choice("LWC_TAG_LATEST", TAG_RULES),
            branch=get.optional("CI_COMMIT_BRANCH"),
            default_branch=get.optional("CI_DEFAULT_BRANCH"),
            git_tag=get.optional("CI_COMMIT_TAG"),
            created=_created(get),
            ci_style=ci_style(env),
            dind_host=get.optional("LWC_DIND_HOST"),
            docker_tls_certdir=get.optional("DOCKER_TLS_CERTDIR"),
            secret_variables=_secret_variables(env),
        )
        _refuse_secrets_in_public_values(settings, env)
        return settings


#: Settings whose values end up in a pushed tag, an image label or the report: public.
PUBLIC_FIELDS = {"to_image": "TO", "extra_tags": "LWC_EXTRA_TAGS", "from_image": "FROM",
                 "project_url": "CI_PROJECT_URL", "commit_sha": "CI_COMMIT_SHA",
                 "project_name": "CI_PROJECT_NAME", "job_id": "CI_JOB_ID",
                 "branch": "CI_COMMIT_BRANCH", "git_tag": "CI_COMMIT_TAG",
                 "default_branch": "CI_DEFAULT_BRANCH"}


def _refuse_secrets_in_public_values(settings: Settings, env: Mapping[str, str]) -> None:
    """A secret's value never goes into a tag, a label or the report."""
    secrets = secret_values(env)
    for field_name, variable in PUBLIC_FIELDS.items():
        value = getattr(settings, field_name)
        text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value or "")
        found = sorted(name for name, secret in secrets.items() if secret in text)
        if found:
            raise ConfigError(variable, f"contains the value of a secret variable ({found[0]}); "
                                        "it would be pushed as a tag or written into a label "
                                        "and the report")


_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _secret_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    names = user_secret_names(env)
    for name in names:
        if not _VARIABLE_RE.fullmatch(name):
            raise ConfigError(USER_SECRETS, f"{name!r} is not a variable name")
    return names


def _build_env(get: _Getter, env: Mapping[str, str]) -> tuple[str, ...]:
    """Names passed into the build: never a secret variable (the job's, the name rule's, the
    user's), nor one whose value carries a secret's value under an innocent name."""
    names = split_list(get.text("LWC_BUILD_ENV"))
    user = _secret_variables(env)
    secrets = secret_values(env)
    for name in names:
        if not _VARIABLE_RE.fullmatch(name):
            raise ConfigError("LWC_BUILD_ENV", f"{name!r} is not a variable name")
        if is_secret_name(name, user):
            raise ConfigError("LWC_BUILD_ENV", f"{name} holds a secret; it never goes into the "
                                               "build (and so never into the image)")
        carried = sorted(s for s, value in secrets.items() if value in (env.get(name) or ""))
        if carried:
            raise ConfigError("LWC_BUILD_ENV", f"{name} contains the value of {carried[0]}, a "
                                               "secret; it never goes into the build (and so "
                                               "never into the image)")
    return names


def checkout_target(text: str, env: Mapping[str, str]) -> None:
    """TO from the checkout's .env (M4): its repository must be CI_REGISTRY_IMAGE or lie below
    it; outside CI (no CI_REGISTRY_IMAGE), a local image: no registry host, not pushed (a name
    without a host would be pushed to Docker Hub), and under ``lwcontainer/`` (the default's
    namespace): the commit and the tags move a local name, and the checkout must not move one of
    the user's own images (``python:3.12``, FROM itself) onto its build. Else a ConfigError
    naming the rule."""
    get = _Getter(env)
    try:
        target = parse_target(text)
    except InvalidReference:
        return  # Settings names the bad reference
    own = get.optional("CI_REGISTRY_IMAGE")
    if own is not None:
        try:
            repository = parse(own).normalized.repository
        except InvalidReference:
            return  # Settings names it
        wanted = target.normalized.repository
        if wanted == repository or wanted.startswith(repository + "/"):
            return
        where = f"CI_REGISTRY_IMAGE ({own}) or a repository below it"
    else:
        pushed = get.optional("CI_REGISTRY") is not None and \
            (get.optional("LWC_PUSH") or "auto").lower() != "never"
        if target.domain is None and not pushed and target.path.startswith(LOCAL_NAMESPACE):
            return
        where = ("CI_REGISTRY_IMAGE or a repository below it, or, outside CI (no "
                 f"CI_REGISTRY_IMAGE), a local image under {LOCAL_NAMESPACE} (no registry host) "
                 "that is not pushed")
    raise ConfigError("TO", f"{text!r} from the checkout's .env: the checkout may name only "
                            f"{where}; set TO in the environment or on the command line to "
                            "push elsewhere")


def _report(get: _Getter, cwd: Path, project_dir: Path) -> dict:
    """The report's path, inside the project directory (or the working directory, where CI
    starts the job); the writer follows no link below that root (output/files.py)."""
    base = cwd.resolve()
    path = Path(os.path.normpath(base / get.text("LWC_REPORT")))
    for root in (project_dir, base):
        if path != root and path.is_relative_to(root):
            return dict(report=path, report_root=root)
    raise ConfigError("LWC_REPORT", f"{path} must lie inside the project directory "
                                    f"{project_dir} (or the working directory {base})")


def _report_prefix(get: _Getter) -> str:
    prefix = get.text("LWC_REPORT_PREFIX")
    if prefix and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ConfigError("LWC_REPORT_PREFIX", f"{prefix!r}: letters, digits and '_' only, not "
                                               "starting with a digit (a variable name prefix)")
    return prefix


def _from_image(get: _Getter, required: bool) -> Reference | None:
    if get.optional("FROM") is None:
        if required:
            raise ConfigError("FROM", "not set: name the base image to build on, e.g. "
                                      "FROM=gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms")
        return None
    return get.reference("FROM", parse)


def _registry(get: _Getter, env: Mapping[str, str]) -> dict:
    registry = get.optional("CI_REGISTRY")
    user = get.optional("CI_REGISTRY_USER")
    password = next((env[name] for name in PASSWORD_VARIABLES if env.get(name)), None)
    if registry is not None:
        _registry_host("CI_REGISTRY", registry)
        if not user:
            raise ConfigError("CI_REGISTRY_USER", f"not set, but CI_REGISTRY={registry} "
                                                  "asks for a login and a push")
        if not password:
            raise ConfigError("CI_REGISTRY_PASSWORD", "none of " + ", ".join(PASSWORD_VARIABLES)
                              + f" is set, but CI_REGISTRY={registry} asks for a login")
    return dict(registry=registry, registry_user=user, registry_password=password)


def _cvmfs(get: _Getter) -> dict:
    repos = split_list(get.text("LWC_CVMFS_REPOS"))
    for repo in repos:
        if not _REPO_RE.fullmatch(repo):
            raise ConfigError("LWC_CVMFS_REPOS", f"{repo!r} is not a repository name")
    return dict(cvmfs=get.choice("LWC_CVMFS", CVMFS_SOURCES),
                cvmfs_host_dir=_host_directory(get, "LWC_CVMFS_HOST_DIR"),
                cvmfs_mounts=_host_directory(get, "LWC_CVMFS_MOUNTS"),
                cvmfs_repos=repos,
                cvmfs_timeout=get.number("LWC_CVMFS_TIMEOUT"))


def _automounter(get: _Getter) -> dict:
    name = get.text("LWC_AUTOMOUNTER_NAME")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError("LWC_AUTOMOUNTER_NAME", f"{name!r} is not a valid container name")
    try:
        options = tuple(shlex.split(get.text("LWC_AUTOMOUNTER_OPTIONS")))
    except ValueError as exc:
        raise ConfigError("LWC_AUTOMOUNTER_OPTIONS",
                          f"cannot be split like a shell: {exc}") from None
    if any(not opt.isprintable() for opt in options):
        raise ConfigError("LWC_AUTOMOUNTER_OPTIONS", "contains control characters")
    return dict(automounter_image=get.reference("LWC_AUTOMOUNTER_IMAGE", parse),
                automounter_name=name,
                automounter_options=options,
                keep_automounter=truthy(get.optional("LWC_KEEP_AUTOMOUNTER")))


def _registry_host(name: str, value: str) -> str:
    """host[:port], as a reference names a registry: never a value docker would read as an
    option (``-…``)."""
    if not REGISTRY_RE.fullmatch(value):
        raise ConfigError(name, f"{value!r} is not a registry host[:port] (e.g. "
                                "gitlab-registry.cern.ch or 127.0.0.1:5000)")
    return value


#: Directories a CVMFS setting must never name: bind-mounting or purging them harms the host.
SYSTEM_DIRECTORIES = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32",
                                "/lib64", "/libx32", "/proc", "/root", "/run", "/sbin", "/sys",
                                "/usr", "/var", "/tmp", "/opt", "/srv", "/mnt", "/media"})


def _host_directory(get: _Getter, name: str) -> str:
    path = os.path.normpath(_absolute(get, name))
    if path in SYSTEM_DIRECTORIES:
        raise ConfigError(name, f"{path!r} is a system directory; name a directory of its own, "
                                "e.g. /cvmfs or /cvmfsmounts")
    return path


def _created(get: _Getter) -> datetime | None:
    """The reproducible creation time: SOURCE_DATE_EPOCH, else the commit's timestamp."""
    epoch = get.optional("SOURCE_DATE_EPOCH")
    if epoch is not None:
        if not epoch.isascii() or not epoch.isdigit():
            raise ConfigError("SOURCE_DATE_EPOCH", f"{epoch!r} is not a whole number of seconds")
        try:
            when = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            when = None
        if when is None or when.year > 9999:
            raise ConfigError("SOURCE_DATE_EPOCH", f"{epoch} seconds is past the year 9999")
        return when
    stamp = get.optional("CI_COMMIT_TIMESTAMP")
    if stamp is not None:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError("CI_COMMIT_TIMESTAMP", f"{stamp!r} is not an ISO 8601 time") from None
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return None


def _absolute(get: _Getter, name: str) -> str:
    """A host path that goes into a ``-v`` argument: absolute, without ':' or ','."""
    path = get.text(name)
    if not path.startswith("/") or ":" in path or "," in path:
        raise ConfigError(name, f"{path!r} must be an absolute path without ':' or ','")
    return path


def _default_to(get: _Getter, project_dir: Path) -> str:
    tag = get.optional("CI_COMMIT_SHORT_SHA") or "latest"
    repository = get.optional("CI_REGISTRY_IMAGE") or f"{LOCAL_NAMESPACE}{slug(project_dir.name)}"
    return f"{repository}:{tag}"


def _build_script(text: str, project_dir: Path, check: bool) -> str:
    """The script as the container sees it: a path relative to the project directory."""
    path = (project_dir / text)
    resolved = path.resolve()
    if not resolved.is_relative_to(project_dir):
        raise ConfigError("LWC_BUILD_SCRIPT", f"{text!r} lies outside the project directory "
                                              f"{project_dir}, which is all the build mounts")
    if check:
        if not resolved.is_file():
            raise ConfigError("LWC_BUILD_SCRIPT", f"{path} does not exist or is not a file")
        if not os.access(resolved, os.R_OK):
            raise ConfigError("LWC_BUILD_SCRIPT", f"{path} is not readable")
    return "./" + resolved.relative_to(project_dir).as_posix()


class _Getter:
    """Reads one variable at a time and turns every bad value into a ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        if "\n" in value or "\r" in value or "\0" in value:
            raise ConfigError(name, "contains a line break or NUL")
        return value.strip()

    def text(self, name: str, default: str | None = None) -> str:
        """The value, else ``default``, else the table's default."""
        value = self.optional(name)
        if value is not None:
            return value
        return SPEC_BY_NAME[name].default if default is None else default

    def convert(self, name: str, value: str, parser):
        try:
            return parser(value)
        except InvalidReference as exc:
            raise ConfigError(name, str(exc)) from None

    def reference(self, name: str, parser, default: str | None = None) -> Reference:
        return self.convert(name, self.text(name, default), parser)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in choices:
            raise ConfigError(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, name: str, integer: bool = False) -> float:
        text = self.text(name)
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "a whole number" if integer else "a number of seconds"
            raise ConfigError(name, f"{text!r} is not {kind}") from None
        if not 0 <= value < float("inf"):  # also refuses NaN
            raise ConfigError(name, f"{text!r} must be zero or more")
        return value
