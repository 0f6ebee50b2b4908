"""Docker image references: parse and validate against the distribution reference grammar."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = (rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# The OCI digest grammar, algorithm:encoded; docker accepts the algorithms go-digest registers,
# each with its own length of lower-case hex.
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)", re.ASCII)
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX64_RE = re.compile(r"[a-f0-9]{64}")
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
#: A registry as a reference names it: host[:port] (host names, IPv4, [IPv6]); never '-…'.
REGISTRY_RE = _DOMAIN_RE
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

    @property
    def normalized(self) -> Reference:
        """Fully qualified, as docker completes it: docker.io, library/ for an official image,
        latest when neither tag nor digest is given."""
        if self.domain is None and "/" in self.path and "." in self.path.split("/", 1)[0]:
            # docker splits off a first component with '.' as the registry host; one that is
            # no valid host (a_b.com) stays part of the path, with no registry at all
            return Reference(None, self.path, self.tag or (None if self.digest else "latest"),
                             self.digest)
        domain = self.domain if self.domain not in (None, "index.docker.io") else "docker.io"
        path = f"library/{self.path}" if domain == "docker.io" and "/" not in self.path \
            else self.path
        tag = self.tag or (None if self.digest else "latest")
        return Reference(domain, path, tag, self.digest)

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
    _check_text(text)
    name, at, digest = text.partition("@")
    if at:
        _check_digest(text, digest)
    name, tag = _split_tag(text, name)
    domain, path = _split_domain(text, name)
    ref = Reference(domain, path, tag, digest or None)
    if len(ref.normalized.path) > MAX_NAME_LENGTH:  # docker counts the path only, library/ too
        raise InvalidReference(f"{text!r}: its repository path {ref.normalized.path[:20]!r}… is "
                               f"longer than {MAX_NAME_LENGTH} characters")
    return ref


def _check_text(text: str) -> None:
    if not text:
        raise InvalidReference("empty image reference")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference(f"{text!r} contains white space")
    if not text.isascii():
        raise InvalidReference(f"{text!r} contains non-ASCII characters")


def _split_tag(text: str, name: str) -> tuple[str, str | None]:
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon <= slash:
        return name, None
    name, tag = name[:colon], name[colon + 1:]
    if not TAG_RE.fullmatch(tag):
        raise InvalidReference(
            f"{text!r} has an invalid tag {tag!r} (letters, digits, '_', '.', '-', at most 128)")
    return name, tag


def _split_domain(text: str, name: str) -> tuple[str | None, str]:
    """(domain, path), as docker splits them: a first component with '.' or ':', localhost or
    upper case is a registry host, unless it is no valid host but a valid path component."""
    domain = None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if _DOMAIN_RE.fullmatch(first):
            domain, name = first, rest
        elif not re.fullmatch(_PATH_COMPONENT, first, re.ASCII):  # docker reads foo_bar.com
            raise InvalidReference(f"{text!r} has an invalid registry host {first!r}")
    if domain is None and _HEX64_RE.fullmatch(name):
        raise InvalidReference(f"{text!r}: a repository name cannot be 64 hexadecimal "
                               "characters (that is an image id)")
    if not _PATH_RE.fullmatch(name):
        raise InvalidReference(
            f"{text!r} has an invalid repository name {name!r} "
            "(lower-case letters, digits and separators '.', '_', '-', '/')")
    return domain, name


def _check_digest(text: str, digest: str) -> None:
    found = _DIGEST_RE.fullmatch(digest)
    if not found:
        raise InvalidReference(f"{text!r} has an invalid digest {digest!r} (algorithm:hex)")
    algorithm, encoded = found.groups()
    if algorithm not in DIGEST_LENGTHS:
        raise InvalidReference(f"{text!r} has an unsupported digest algorithm {algorithm!r} "
                               f"({', '.join(DIGEST_LENGTHS)})")
    if not re.fullmatch(rf"[a-f0-9]{{{DIGEST_LENGTHS[algorithm]}}}", encoded):
        raise InvalidReference(f"{text!r} has an invalid digest: {algorithm} is "
                               f"{DIGEST_LENGTHS[algorithm]} lower-case hexadecimal characters")


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


def is_loopback(host: str) -> bool:
    """A registry host[:port] on the loopback range (or localhost)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_registry(host: str | None, listed: tuple[str, ...]) -> bool:
    """Reached without TLS verification: the loopback range (as docker treats it) and the
    registries of LWC_INSECURE_REGISTRIES; every other registry keeps TLS, and so does a
    reference that names none (``None``: ``foo_bar.com/x`` is a path, docker's reading)."""
    if host is None:
        return False
    return is_loopback(host) or host in listed
