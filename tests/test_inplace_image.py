"""The in-place engine's pure parts: the layer description, platform choice in an index, and the
new image's config and manifest. The registry side is proven in test_inplace_e2e.py."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from lwcontainer.config.reference import parse
from lwcontainer.engines.inplace.capture import render
from lwcontainer.engines.inplace.image import (DOCKER_MANIFEST, OCI_MANIFEST, Base, Layer,
                                               assemble, pick_platform)
from lwcontainer.config.reference import is_loopback
from lwcontainer.errors import ConfigError

CONFIG = {"architecture": "amd64", "os": "linux",
          "config": {"Cmd": ["/bin/bash"], "WorkingDir": "/home/cmsusr", "User": "cmsusr",
                     "Env": ["PATH=/usr/bin:/bin"], "Entrypoint": None,
                     "Labels": {"from.base": "kept"}},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
          "history": [{"created_by": "base"}]}


def write_layer(directory: Path, payload: bytes = b"tar bytes") -> Layer:
    data = gzip.compress(payload, mtime=0)
    (directory / "lwcontainer-layer.tar.gz").write_bytes(data)
    meta = {"format": 1, "diff_id": "sha256:" + hashlib.sha256(payload).hexdigest(),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
            "uncompressed_size": len(payload), "os": "linux", "architecture": "amd64",
            "build_script": ".gitlab/build.sh", "created": 1700000000}
    (directory / "lwcontainer-layer.json").write_text(json.dumps(meta))
    return Layer.read(directory)


def base(media_type: str = DOCKER_MANIFEST) -> Base:
    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"digest": "sha256:" + "c" * 64, "size": 10},
                "layers": [{"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 5}]}
    return Base(manifest, "sha256:" + "f" * 64, CONFIG, "sha256:" + "c" * 64)


def test_the_new_image_keeps_the_base_config_and_adds_one_layer(tmp_path):
    layer = write_layer(tmp_path)
    image = assemble(base(), layer, {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"})
    config = json.loads(image.config)
    for key in ("Cmd", "WorkingDir", "User", "Env", "Entrypoint"):
        assert config["config"][key] == CONFIG["config"][key]
    assert config["config"]["Labels"]["from.base"] == "kept"
    assert config["config"]["Labels"]["org.opencontainers.image.created"] == \
        "2023-11-14T22:13:20Z"
    assert config["rootfs"]["diff_ids"] == [*CONFIG["rootfs"]["diff_ids"], layer.diff_id]
    assert len(config["history"]) == 2 and "build.sh" in config["history"][-1]["created_by"]
    assert CONFIG["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64]  # the base is not changed
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "digest": image.config_digest, "size": len(image.config)}
    assert image.config_digest == "sha256:" + hashlib.sha256(image.config).hexdigest()
    assert manifest["layers"][-1] == {
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "digest": layer.digest, "size": layer.size}


def test_an_oci_base_gets_oci_types(tmp_path):
    manifest = json.loads(assemble(base(OCI_MANIFEST), write_layer(tmp_path), {}).manifest)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_the_platform_the_capture_ran_on_is_picked_from_an_index():
    index = {"manifests": [
        {"digest": "sha256:arm", "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:amd", "size": 2, "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert pick_platform(index, "linux", "amd64", "r.io/x:1")["digest"] == "sha256:amd"
    with pytest.raises(ConfigError, match="linux/arm64, linux/amd64|linux/amd64, linux/arm64"):
        pick_platform(index, "linux", "ppc64le", "r.io/x:1")


def test_a_swapped_or_truncated_layer_is_refused(tmp_path):
    write_layer(tmp_path)
    (tmp_path / "lwcontainer-layer.tar.gz").write_bytes(gzip.compress(b"other", mtime=0))
    with pytest.raises(ConfigError, match="capture again"):
        Layer.read(tmp_path)


def test_no_layer_says_which_job_to_run(tmp_path):
    with pytest.raises(ConfigError, match="run the capture job first"):
        Layer.read(tmp_path)


def test_a_layer_of_another_format_asks_for_a_new_script(tmp_path):
    write_layer(tmp_path)
    meta = json.loads((tmp_path / "lwcontainer-layer.json").read_text())
    (tmp_path / "lwcontainer-layer.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ConfigError, match="init --force"):
        Layer.read(tmp_path)


@pytest.mark.parametrize("text,host,path", [
    ("cmssw/el8:x86_64", "docker.io", "cmssw/el8"),
    ("ubuntu", "docker.io", "library/ubuntu"),
    ("gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest", "gitlab-registry.cern.ch",
     "cms-cloud/cmssw-docker/cc7-cms"),
    ("127.0.0.1:5055/a/b:1", "127.0.0.1:5055", "a/b")])
def test_registry_api_names(text, host, path):
    ref = parse(text)
    assert (ref.normalized.domain, ref.normalized.path) == (host, path)  # the API's names


@pytest.mark.parametrize("host,loopback", [("127.0.0.1:5000", True), ("localhost:5000", True),
                                           ("[::1]:5000", True), ("127.9.9.9", True),
                                           ("gitlab-registry.cern.ch", False),
                                           ("10.0.0.1:5000", False)])
def test_only_loopback_registries_are_plain_http_by_default(host, loopback):
    assert is_loopback(host) is loopback


def test_the_capture_script_is_generated_with_version_and_build_script():
    text = render(".ci/make.sh")
    assert "@VERSION@" not in text and "@BUILD_SCRIPT@" not in text
    assert "LWC_BUILD_SCRIPT:-.ci/make.sh" in text
    with pytest.raises(ValueError):
        render("x'; rm -rf /; '")


@pytest.mark.parametrize("platform", [("linux", "arm64"), ("windows", "amd64"), (None, None)])
def test_a_layer_goes_only_onto_an_image_of_the_platform_it_was_captured_on(tmp_path, platform):
    """A single-platform FROM has no index to pick from: its config says what it is for."""
    layer = write_layer(tmp_path)   # captured on linux/amd64
    config = {k: v for k, v in CONFIG.items() if k not in ("os", "architecture")}
    config.update({k: v for k, v in zip(("os", "architecture"), platform, strict=True) if v})
    other = Base(base().manifest, "sha256:" + "f" * 64, config, "sha256:" + "c" * 64)
    with pytest.raises(ConfigError, match="captured on linux/amd64") as caught:
        assemble(other, layer, {})
    assert caught.value.setting == "FROM"
    assert f"for {platform[0]}/{platform[1]}" in str(caught.value)
