"""References as the docker CLI parses them: one table, checked against lwcontainer's parser
without an engine, and against the real docker CLI on the test bed (its verdict is the error it
prints before it asks the engine anything)."""
from __future__ import annotations

import pytest

from lwcontainer.config.reference import InvalidReference, parse

HEX = "0123456789abcdef" * 8
#: reference -> does the docker CLI accept it?
TABLE = {
    "busybox": True, "library/busybox:1.36": True, "r.io/a/b:v1": True,
    "localhost/a": True, "localhost:5000/a/b:tag": True, "127.0.0.1:5055/a/b": True,
    "[::1]:5000/a/b": True, "[2001:db8::1]/a": True, "foo_bar.com/a": True,
    "a__b/c-d--e/f.g:T_1-x.y": True, "r.io/x@sha256:" + HEX[:64]: True,
    "r.io/x:1@sha256:" + HEX[:64]: True, "x@sha512:" + HEX[:128]: True,
    "x@sha384:" + HEX[:96]: True,
    "Busybox": False, "a b": False, "r.io/x:-bad": False, "r.io/": False, "re..po": False,
    "-repo": False, "x@": False, "x@sha256:" + HEX[:32]: False,
    "x@sha256:" + HEX[:64].upper(): False, "x@md5:" + HEX[:32]: False,
    "x@1sha:" + HEX[:64]: False, "x@sha512:" + HEX[:64]: False, "bad_host.io:x/repo": False,
    "r.io/x:" + "t" * 129: False, "x:tag:tag": False,
    # the 255-character limit is on the repository path, library/ included, never the domain
    "gitlab-registry.cern.ch/" + "a" * 232: True, "r.io/" + "a" * 255: True,
    "r.io/" + "a" * 256: False, "a" * 247: True, "a" * 248: False,
    "docker.io/" + "a" * 247: True, "docker.io/" + "a" * 248: False,
    "localhost:5000/" + "a/" * 127 + "a": True, "a_b.com/c": True,
}


@pytest.mark.parametrize("text,accepted", TABLE.items())
def test_lwcontainer_accepts_what_docker_accepts(text, accepted):
    try:
        parse(text)
        ours = True
    except InvalidReference:
        ours = False
    assert ours is accepted


def test_an_image_id_is_not_a_repository_name():
    """The one deliberate difference: docker takes 64 hex characters as an image id; as FROM
    or TO that is never what a user means."""
    with pytest.raises(InvalidReference, match="64 hexadecimal"):
        parse(HEX[:64])


@pytest.fixture(scope="module")
def cli_major(testbed) -> int:
    version = testbed.docker("version", "--format", "{{.Client.Version}}", check=False).stdout
    return int(version.split(".")[0] or 0)


@pytest.mark.parametrize("text,accepted", TABLE.items())
def test_the_table_is_the_docker_clis_verdict(testbed, cli_major, text, accepted):
    """Today's docker CLI (23 and later parse bracketed IPv6 registry hosts)."""
    if "[" in text and cli_major < 23:
        pytest.skip(f"docker CLI {cli_major} predates IPv6 registry hosts")
    done = testbed.docker("create", "--pull", "never", text, check=False)
    assert done.returncode != 0
    cli_accepted = done.stderr.startswith("Error response from daemon")
    assert cli_accepted is accepted, done.stderr


def test_a_host_docker_cannot_parse_stays_in_the_path_as_for_docker(testbed):
    """docker's name for a_b.com/c is a_b.com/c: never docker.io/a_b.com/c."""
    done = testbed.docker("create", "--pull", "never", "a_b.com/c", check=False)
    assert f"No such image: {parse('a_b.com/c').normalized}" in done.stderr
