"""What CI systems need from lwcontainer: collapsible log sections (GitLab, GitHub Actions), the
docker-in-docker engine address, GitHub's names for GitLab's variables, and derived tags."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Mapping, TextIO

from .reference import TAG_RE

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
            self.stream.flush()
            self.stream.write(text)
            self.stream.flush()

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


def ci_style(env: Mapping[str, str]) -> str | None:
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    return None


# -- the engine ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """Variables for the docker CLI, and why."""

    env: dict[str, str]
    reason: str

    @property
    def address(self) -> str | None:
        return self.env.get("DOCKER_HOST")

    @property
    def cert_path(self) -> str | None:
        return self.env.get("DOCKER_CERT_PATH")


def engine(env: Mapping[str, str], local_socket: bool) -> Engine:
    """Where the engine is. A DOCKER_HOST the user set is never overridden (only completed with
    the TLS variables when it names port 2376 and DOCKER_TLS_CERTDIR is set, as the docker
    image's entrypoint does). In a CI job with no local socket: the dind service, with TLS when
    DOCKER_TLS_CERTDIR is set; on a Kubernetes executor it shares the pod's network."""
    host = env.get("DOCKER_HOST")
    certdir = env.get("DOCKER_TLS_CERTDIR")
    tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": f"{certdir}/client"} if certdir else {}
    if host:
        if host.rstrip("/").endswith(":2376") and certdir and not env.get("DOCKER_TLS_VERIFY"):
            return Engine({"DOCKER_HOST": host, **tls},
                          "DOCKER_HOST names port 2376 and DOCKER_TLS_CERTDIR is set: TLS")
        return Engine({"DOCKER_HOST": host}, "DOCKER_HOST is set")
    if not (env.get("CI") or env.get("GITLAB_CI")):
        return Engine({}, "the default socket (not a CI job)")
    if local_socket:
        return Engine({}, "the local engine socket")
    kubernetes = bool(env.get("KUBERNETES_PORT"))
    name = env.get("LWC_DIND_HOST") or ("localhost" if kubernetes else "docker")
    where = "the Kubernetes pod's dind service" if kubernetes else "the dind service"
    if certdir:
        return Engine({"DOCKER_HOST": f"tcp://{name}:2376", **tls},
                      f"{where}, TLS (DOCKER_TLS_CERTDIR={certdir})")
    return Engine({"DOCKER_HOST": f"tcp://{name}:2375"}, f"{where}, TLS disabled")


# -- GitHub Actions --------------------------------------------------------------------------
def github_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """GitLab's variable names filled from GitHub Actions' (lowest priority)."""
    if env.get("GITHUB_ACTIONS") != "true":
        return {}
    out: dict[str, str] = {}
    sha = env.get("GITHUB_SHA", "")
    if sha:
        out.update(CI_COMMIT_SHA=sha, CI_COMMIT_SHORT_SHA=sha[:8])
    repository = env.get("GITHUB_REPOSITORY", "")
    if repository:
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        out.update(CI_PROJECT_URL=f"{server}/{repository}",
                   CI_PROJECT_NAME=repository.split("/")[-1])
    if env.get("GITHUB_RUN_ID"):
        out["CI_JOB_ID"] = env["GITHUB_RUN_ID"]
    ref = env.get("GITHUB_REF_NAME")
    if ref:
        out["CI_COMMIT_TAG" if env.get("GITHUB_REF_TYPE") == "tag" else "CI_COMMIT_BRANCH"] = ref
    token = env.get("CI_REGISTRY_PASSWORD") or env.get("GITHUB_TOKEN")
    if token and repository:
        out.update(CI_REGISTRY="ghcr.io", CI_REGISTRY_USER=env.get("GITHUB_ACTOR", "github"),
                   CI_REGISTRY_IMAGE=f"ghcr.io/{repository.lower()}",
                   CI_REGISTRY_PASSWORD=token)
    return out


# -- tags ------------------------------------------------------------------------------------
def sanitise_tag(text: str) -> str:
    """A valid docker tag from any text: invalid characters become '-', a first character
    that may not start a tag becomes '_', at most 128 characters."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:128]
    if tag and not re.match(r"[A-Za-z0-9_]", tag):
        tag = "_" + tag[1:]
    tag = tag or "_"
    assert TAG_RE.fullmatch(tag), tag
    return tag


def derived_tags(rule: str, branch: str | None, default_branch: str | None,
                 git_tag: str | None) -> tuple[str, ...]:
    """LWC_TAG_LATEST: auto = latest on the default branch and the git tag on tag pipelines;
    always = latest always (and the git tag); never = neither."""
    if rule == "never":
        return ()
    tags = []
    if rule == "always" or (branch and default_branch and branch == default_branch):
        tags.append("latest")
    if git_tag:
        tags.append(sanitise_tag(git_tag))
    return tuple(tags)
