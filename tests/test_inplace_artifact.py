"""The captured layer publish receives from another job is checked before anything is sent:
every way an artifact can lie is refused with exit 2 and a message naming the file and the
problem. What reaches a registry is proven in test_inplace_registry.py (a recording registry)
and test_inplace_e2e.py (the test bed's registry)."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from artifacts import LAYER, META, layer_tar, write_artifact
from lwcontainer.engines.inplace.artifact import Layer, read
from lwcontainer.errors import ConfigError, ExitCode


def refused(directory, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as caught:
        read(directory)
    assert caught.value.exit_code == ExitCode.CONFIG
    return str(caught.value)


def test_a_good_artifact_is_read(tmp_path):
    meta = write_artifact(tmp_path)
    layer = read(tmp_path)
    assert (layer.digest, layer.diff_id, layer.size) == (meta["digest"], meta["diff_id"],
                                                         meta["size"])
    with layer.open() as file:
        assert file.read() == (tmp_path / LAYER).read_bytes()


def test_format_1_with_keys_it_does_not_know_is_read(tmp_path):
    """A newer capture script may add notes (extended attributes it could not carry)."""
    write_artifact(tmp_path, xattrs={"carried": False, "reason": "tar 1.26 without --xattrs"},
                   something_new=[1, 2])
    assert read(tmp_path).architecture == "amd64"


def test_a_tarball_that_is_a_link_to_a_file_outside_the_project_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    meta = write_artifact(outside)  # a consistent description of the file outside
    (project / META).write_text(json.dumps(meta))
    (project / LAYER).symlink_to(outside / LAYER)
    message = refused(project, "is a symbolic link")
    assert "nothing was uploaded" in message


def test_a_description_that_is_a_link_is_refused(tmp_path):
    write_artifact(tmp_path)
    (tmp_path / "real.json").write_text((tmp_path / META).read_text())
    (tmp_path / META).unlink()
    (tmp_path / META).symlink_to(tmp_path / "real.json")
    refused(tmp_path, "is a symbolic link")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    write_artifact(tmp_path)
    (tmp_path / LAYER).unlink()
    os.mkfifo(tmp_path / LAYER)
    refused(tmp_path, "not a regular file")


def test_a_hard_link_is_refused(tmp_path):
    write_artifact(tmp_path)
    os.link(tmp_path / LAYER, tmp_path / "second-name")
    refused(tmp_path, "hard link")


def test_a_diff_id_that_is_not_the_uncompressed_streams_is_refused(tmp_path):
    other = "sha256:" + "0" * 64
    write_artifact(tmp_path, diff_id=other)
    message = refused(tmp_path, "diff_id")
    assert other in message


def test_a_swapped_or_truncated_tarball_is_refused(tmp_path):
    write_artifact(tmp_path)
    data = (tmp_path / LAYER).read_bytes()
    (tmp_path / LAYER).write_bytes(data[:-1])
    refused(tmp_path, "truncated or swapped")
    meta = json.loads((tmp_path / META).read_text())
    (tmp_path / META).write_text(json.dumps({**meta, "size": len(data) - 1}))
    refused(tmp_path, "capture again")


def test_a_truncated_gzip_stream_is_refused_even_when_described_so(tmp_path):
    tar = layer_tar()
    write_artifact(tmp_path, tar=tar, compressed=gzip.compress(tar)[:-8])
    refused(tmp_path, "capture again")


def test_trailing_bytes_after_the_gzip_stream_are_refused(tmp_path):
    tar = layer_tar()
    write_artifact(tmp_path, tar=tar, compressed=gzip.compress(tar) + b"appended")
    refused(tmp_path, "not a gzip stream")


def test_a_layer_that_unpacks_past_its_declared_size_stops_there(tmp_path):
    tar = layer_tar({"zeros": bytes(4 << 20)})
    write_artifact(tmp_path, tar=tar, uncompressed_size=1024)
    refused(tmp_path, "more than the 1024 bytes")


@pytest.mark.parametrize("key,value,match", [
    ("size", -1, "not negative"), ("uncompressed_size", -5, "not negative"),
    ("size", True, "an integer"), ("size", "12", "an integer"),
    ("created", -1, "not negative"),
    ("digest", "sha256:x/../../victim", "64 hex"), ("diff_id", "md5:" + "0" * 32, "64 hex"),
    ("digest", "sha256:" + "A" * 64, "64 hex"),
    ("architecture", "amd64\x1b[2J", "plain word"), ("os", "", "plain word"),
    ("build_script", "build.sh\n$(id)", "printable"),
    ("diff_id", None, "has no 'diff_id'"),
])
def test_descriptions_that_lie_are_refused(tmp_path, key, value, match):
    write_artifact(tmp_path, **{key: value})
    message = refused(tmp_path, match)
    assert META in message and "\x1b" not in message


@pytest.mark.parametrize("version", [99, 0, "1", True, None])
def test_an_unknown_format_asks_for_a_new_capture_script(tmp_path, version):
    write_artifact(tmp_path, format=version)
    refused(tmp_path, "init --force")


def test_a_description_that_is_not_an_object_is_refused(tmp_path):
    write_artifact(tmp_path)
    (tmp_path / META).write_text("[1, 2]")
    refused(tmp_path, "not a JSON object")


def test_no_artifact_says_which_job_to_run(tmp_path):
    refused(tmp_path, "run the capture job first")


def test_a_layer_replaced_after_the_check_is_not_uploaded(tmp_path):
    write_artifact(tmp_path)
    layer = read(tmp_path)
    (tmp_path / LAYER).unlink()
    (tmp_path / LAYER).write_bytes(b"x" * layer.size)
    with pytest.raises(ConfigError, match="replaced after it was checked"):
        layer.open()


def test_the_layer_class_is_the_one_image_assembly_uses():
    from lwcontainer.engines.inplace import image
    assert image.Layer is Layer


def test_the_image_the_capture_ran_in_is_read_and_must_be_printable(tmp_path):
    write_artifact(tmp_path, captured_in="registry.example/cms/el9:2024")
    assert read(tmp_path).captured_in == "registry.example/cms/el9:2024"
    write_artifact(tmp_path, captured_in=None)   # a capture script of before: not known
    assert read(tmp_path).captured_in == ""
    write_artifact(tmp_path, captured_in="el9\x1b[2J")
    assert "\x1b" not in refused(tmp_path, "captured_in is .* an image reference")
