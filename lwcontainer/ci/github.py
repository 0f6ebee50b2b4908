"""GitHub Actions: GitLab's variable names filled from GitHub's, and masking for its log."""
from __future__ import annotations

from typing import Mapping

from ..output.masking import MIN_PART


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


def escape_data(text: str) -> str:
    """As GitHub's toolkit escapes a workflow command's data."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def add_mask_commands(secret: str) -> list[str]:
    """``::add-mask::`` lines for a secret: GitHub masks line by line, so a multi-line secret
    gets one command per line, and the whole of it once more. A line shorter than the masker's
    MIN_PART is not masked on its own (a line ``}`` would mask every ``}`` in the log)."""
    lines = [line for line in secret.replace("\r", "").split("\n") if len(line) >= MIN_PART]
    parts = [line for line in lines if line != secret]
    return [f"::add-mask::{escape_data(part)}" for part in [secret, *parts]]
