import pytest
from hypothesis import given, strategies as st

from lwcontainer.config.reference import (InvalidReference, Reference, extra_target,
                                          insecure_registry, parse, parse_target)


@pytest.mark.parametrize("text, expected", [
    ("busybox", Reference(None, "busybox")),
    ("clelange/cc7-cms", Reference(None, "clelange/cc7-cms")),
    ("gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest",
     Reference("gitlab-registry.cern.ch", "cms-cloud/cmssw-docker/cc7-cms", "latest")),
    ("localhost:5000/a/b:1.0", Reference("localhost:5000", "a/b", "1.0")),
    ("127.0.0.1:5055/ana/x", Reference("127.0.0.1:5055", "ana/x")),
    ("a__b/c-d--e/f.g:T_1-x.y", Reference(None, "a__b/c-d--e/f.g", "T_1-x.y")),
    ("r.io/x@sha256:" + "a" * 64, Reference("r.io", "x", None, "sha256:" + "a" * 64)),
])
def test_parse_valid(text, expected):
    assert parse(text) == expected
    assert str(parse(text)) == text


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("Busybox", "repository name"),
    ("a b", "white space"),
    ("repo:tag with space", "white space"),
    ("repo:" + "x" * 129, "invalid tag"),
    ("repo:-bad", "invalid tag"),
    ("repo;rm -rf /", "white space"),
    ("repo$(id)", "repository name"),
    ("registry.io/", "repository name"),
    ("re..po", "repository name"),
    ("-repo", "repository name"),
    ("rép", "non-ASCII"),
    ("repo@sha256:xyz", "digest"),
    ("bad_host.io:x/repo", "registry host"),
])
def test_parse_invalid(text, fragment):
    with pytest.raises(InvalidReference, match=fragment):
        parse(text)


def test_target_defaults_to_latest_and_refuses_digest():
    assert str(parse_target("r.io/a/b")) == "r.io/a/b:latest"
    with pytest.raises(InvalidReference, match="digest"):
        parse_target("r.io/a/b@sha256:" + "0" * 64)


def test_extra_target_bare_tag_uses_primary_repository():
    primary = parse_target("r.io/a/b:abc123")
    assert str(extra_target("latest", primary)) == "r.io/a/b:latest"
    assert str(extra_target("other.io/c:v1", primary)) == "other.io/c:v1"


@given(st.text(max_size=80))
def test_parse_never_crashes_and_round_trips(text):
    """Any text is either a reference that prints back to itself, or a InvalidReference."""
    try:
        ref = parse(text)
    except InvalidReference:
        return
    assert str(ref) == text
    assert not any(ch.isspace() or ch in ";$`'\"\\()|&<>" for ch in text)


_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@given(st.lists(_alnum, min_size=1, max_size=3),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_generated_valid_references_parse(components, tag):
    text = "/".join(components) + ":" + tag
    ref = parse(text)
    assert ref.tag == tag and ref.path == "/".join(components)


@pytest.mark.parametrize("text,full", [
    ("cmssw/el8:x86_64", "docker.io/cmssw/el8:x86_64"),
    ("busybox", "docker.io/library/busybox:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/cmssw/el8", "docker.io/cmssw/el8:latest"),
    ("r.io/a@sha256:" + "a" * 64, "r.io/a@sha256:" + "a" * 64),
    ("gitlab-registry.cern.ch/cms/x:1", "gitlab-registry.cern.ch/cms/x:1"),
    ("a_b.com/c", "a_b.com/c:latest")])  # no host docker can parse: a path, no docker.io
def test_normalized_is_fully_qualified_as_oci_base_name_asks(text, full):
    assert str(parse(text).normalized) == full


def test_a_reference_naming_no_registry_keeps_tls():
    domain = parse("a_b.com/c:1").normalized.domain
    assert domain is None and insecure_registry(domain, ("a_b.com",)) is False
    assert insecure_registry("127.0.0.1:5000", ()) and insecure_registry("m.lab", ("m.lab",))
    assert not insecure_registry("r.io", ())
