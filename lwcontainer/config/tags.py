"""Tags derived from the pipeline (LWC_TAG_LATEST): latest on the default branch, the git tag."""
from __future__ import annotations

import re

from .reference import TAG_RE


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
