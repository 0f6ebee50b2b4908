"""Docker image references: parse and validate against the distribution reference grammar."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
MAX_NAME_LENGTH = 255


class InvalidReference(ValueError):
    """The text is not a valid image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class Reference:
    domain: str | None
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Parse ``[domain/]path[:tag][@digest]`` exactly as docker does (no normalisation)."""
    if not text:
        raise InvalidReference("empty image reference")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference(f"{text!r} contains white space")
    if not text.isascii():
        raise InvalidReference(f"{text!r} contains non-ASCII characters")
    name, _, digest = text.partition("@")
    if digest and not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(f"{text!r} has an invalid digest {digest!r}")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not TAG_RE.fullmatch(tag):
            raise InvalidReference(
                f"{text!r} has an invalid tag {tag!r} (letters, digits, '_', '.', '-', at most 128)"
            )
    domain = None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN_RE.fullmatch(first):
            raise InvalidReference(f"{text!r} has an invalid registry host {first!r}")
        domain, name = first, rest
    if not _PATH_RE.fullmatch(name):
        raise InvalidReference(
            f"{text!r} has an invalid repository name {name!r} "
            "(lower-case letters, digits and separators '.', '_', '-', '/')"
        )
    if len(name) + (len(domain) + 1 if domain else 0) > MAX_NAME_LENGTH:
        raise InvalidReference(f"{text!r} is longer than {MAX_NAME_LENGTH} characters")
    return Reference(domain, name, tag, digest or None)


def parse_target(text: str) -> Reference:
    """A reference to tag and push: no digest, ``latest`` when no tag is given."""
    ref = parse(text)
    if ref.digest:
        raise InvalidReference(f"{text!r} names a digest; a target needs a tag")
    return ref if ref.tag else ref.with_tag("latest")


def extra_target(text: str, primary: Reference) -> Reference:
    """An extra tag: a bare tag (``latest``) for the primary repository, or a whole reference."""
    if TAG_RE.fullmatch(text):
        return primary.with_tag(text)
    return parse_target(text)
