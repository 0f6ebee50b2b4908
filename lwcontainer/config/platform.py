"""Which CI platform runs lwcontainer, and GitHub Actions' variables under GitLab's names."""
from __future__ import annotations

from typing import Mapping


def ci_style(env: Mapping[str, str]) -> str | None:
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    return None


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
