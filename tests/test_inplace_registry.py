"""The in-place publish against registries that misbehave: `python -m lwcontainer publish`
(LWC_ENGINE=inplace, a captured layer made in Python) against the recording registry of
fakeregistry.py on loopback. Each test asserts on what that registry (or a recording proxy
standing for a host off loopback) received, and on what the user sees."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

from artifacts import LAYER, META, write_artifact
from conftest import Result
from fakeregistry import OCI_INDEX, FakeRegistry, Silent, sha256
from tokenserver import TokenService

USER, PASSWORD = "ci-user", "job-token-s3cret"
BASE_LAYER = b"the base's only layer"


@dataclass
class Scene:
    registry: FakeRegistry
    project: Path
    tmp: Path
    base_digest: str
    base_manifest: bytes

    @property
    def address(self) -> str:
        return self.registry.address

    def publish(self, timeout: float = 60, **overrides: str | None) -> Result:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.tmp), "LWC_ENGINE": "inplace",
               "LWC_LOG_FORMAT": "json", "FROM": f"{self.address}/cms/base:1",
               "TO": f"{self.address}/ana/x:1", "CI_REGISTRY": self.address,
               "CI_REGISTRY_USER": USER, "CI_JOB_TOKEN": PASSWORD, "LWC_PUSH_RETRIES": "0",
               "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        env.update(overrides)
        env = {k: v for k, v in env.items() if v is not None}
        done = subprocess.run([sys.executable, "-m", "lwcontainer", "publish"], cwd=self.project,
                              env=env, capture_output=True, timeout=timeout)
        return Result(done.returncode, done.stdout.decode(errors="replace"),
                      done.stderr.decode(errors="replace"))

    def report(self) -> dict:
        return dotenv_values(self.project / "lwcontainer.env")


def scene_with(registry: FakeRegistry, tmp_path: Path) -> Scene:
    registry.start()
    digest, manifest, _ = registry.add_image("cms/base", "1", [BASE_LAYER])
    project = tmp_path / "project"
    project.mkdir()
    write_artifact(project)
    return Scene(registry, project, tmp_path, digest, manifest)


@pytest.fixture
def scene(tmp_path):
    registry = FakeRegistry(auth=("basic", USER, PASSWORD))
    yield scene_with(registry, tmp_path)
    registry.stop()


@pytest.fixture
def token_scene(tmp_path):
    service = TokenService(tmp_path, USER, PASSWORD)
    realm = service.start()
    registry = FakeRegistry(auth=("bearer", realm))
    registry.tokens = service.issued
    yield scene_with(registry, tmp_path), service
    registry.stop()
    service.stop()


@pytest.fixture
def proxy():
    """Stands for every host off loopback: requests go there through HTTP_PROXY."""
    with FakeRegistry() as recorder:
        yield recorder


def failed(result: Result) -> str:
    errors = [r.get("error", "") for r in result.events("failed")]
    return " ".join(errors) or result.stderr[-2000:]


# -- a publish as it should go --------------------------------------------------------------------
def test_a_publish_sends_layer_config_and_manifest_and_reports_their_digest(scene):
    done = scene.publish()
    assert done.returncode == 0, done.stderr[-3000:]
    pushed, media_type = scene.registry.storage.manifests[("ana/x", "1")]
    assert scene.report()["LWC_IMAGE_DIGEST"] == f"{scene.address}/ana/x@{sha256(pushed)}"
    assert json.loads(pushed)["layers"][0]["digest"] == sha256(BASE_LAYER)
    assert all(r.authorization.startswith("Basic ") for r in scene.registry.received
               if r.path != "/v2/")


# -- M1: credentials only to the registry's own origin -------------------------------------------
def test_an_upload_location_on_another_origin_gets_no_credentials(scene):
    with FakeRegistry(storage=scene.registry.storage) as other:
        scene.registry.upload_location = \
            lambda repo, upload: f"http://{other.address}/v2/{repo}/blobs/uploads/{upload}?s=1"
        done = scene.publish()
        assert done.returncode == 0, done.stderr[-3000:]
        assert other.requests("PUT"), "the layer went to the upload location"
        assert [r.authorization for r in other.received] == [""] * len(other.received)


def test_a_bearer_token_never_goes_to_another_origin(token_scene):
    scene, service = token_scene
    with FakeRegistry(storage=scene.registry.storage) as other:
        scene.registry.upload_location = \
            lambda repo, upload: f"http://{other.address}/v2/{repo}/blobs/uploads/{upload}?s=1"
        done = scene.publish()
        assert done.returncode == 0, done.stderr[-3000:]
        assert other.requests("PUT")
        assert [r.authorization for r in other.received] == [""] * len(other.received)
    assert any(r.authorization.startswith("Bearer ") for r in scene.registry.received)


def test_an_upload_location_over_plain_http_off_loopback_is_refused(scene, proxy):
    scene.registry.upload_location = \
        lambda repo, upload: f"http://uploads.example.org/v2/{repo}/blobs/uploads/{upload}"
    done = scene.publish(HTTP_PROXY=f"http://{proxy.address}",
                         http_proxy=f"http://{proxy.address}")
    assert proxy.received == []
    assert done.returncode == 2, done.stderr[-3000:]
    assert "plain HTTP" in failed(done) and "uploads.example.org" in failed(done)
    assert scene.registry.requests("PUT", "/v2/ana/x/manifests/") == []


def test_a_redirect_to_plain_http_off_loopback_is_not_followed(scene, proxy):
    config_digest = json.loads(scene.base_manifest)["config"]["digest"]
    scene.registry.redirect[f"/v2/cms/base/blobs/{config_digest}"] = \
        f"http://storage.example.org/blobs/{config_digest}"
    done = scene.publish(HTTP_PROXY=f"http://{proxy.address}",
                         http_proxy=f"http://{proxy.address}")
    assert proxy.received == []
    assert done.returncode == 2, done.stderr[-3000:]
    assert "storage.example.org" in failed(done) and "plain HTTP" in failed(done)
    assert scene.registry.writes == []


# -- L2: token realms -----------------------------------------------------------------------------
@pytest.mark.parametrize("open_root", [False, True], ids=["challenged-at-v2", "open-at-v2"])
def test_credentials_go_to_a_realm_on_another_host_only_over_https(tmp_path, proxy, open_root):
    registry = FakeRegistry(auth=("bearer", "http://auth.example.org/token"))
    registry.open_root = open_root  # then the challenge comes with the repository's 401
    scene = scene_with(registry, tmp_path)
    try:
        done = scene.publish(HTTP_PROXY=f"http://{proxy.address}",
                             http_proxy=f"http://{proxy.address}")
    finally:
        registry.stop()
    assert [r.authorization for r in proxy.received] == [""] * len(proxy.received)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "https" in failed(done).lower() and "auth.example.org" in failed(done)
    assert PASSWORD not in done.stderr


def test_a_token_realm_on_another_loopback_port_gets_the_credentials(token_scene):
    scene, service = token_scene
    done = scene.publish()
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["authenticated"] for r in service.requests] == [True]
    assert set(service.requests[0]["scopes"]) == {"repository:cms/base:pull",
                                                  "repository:ana/x:pull,push"}


# -- challenges and tokens: answered once, and only the registry's own -----------------------------
def test_a_token_that_expires_during_the_layers_upload_is_renewed_not_refused(token_scene):
    scene, service = token_scene
    digest = json.loads((scene.project / META).read_text())["digest"]
    expired: list[str] = []

    def expire(received) -> None:  # the token expires while the layer is on its way
        if received.method == "PUT" and received.path.endswith(digest) and not expired:
            expired.append(received.path)
            service.issued.clear()

    scene.registry.before.append(expire)
    done = scene.publish(LWC_PUSH_RETRIES="3")
    assert expired and done.returncode == 0, done.stderr[-3000:]
    assert len(done.events("token_renewed")) == 1 and not done.events("retry")
    pushed, _ = scene.registry.storage.manifests[("ana/x", "1")]
    assert scene.report()["LWC_IMAGE_DIGEST"] == f"{scene.address}/ana/x@{sha256(pushed)}"


def test_a_registry_open_at_v2_gets_the_login_its_repositories_ask_for(tmp_path):
    registry = FakeRegistry(auth=("basic", USER, PASSWORD))
    registry.open_root = True
    scene = scene_with(registry, tmp_path)
    try:
        done = scene.publish()
    finally:
        registry.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r.path for r in registry.received if not r.authorization] == [
        "/v2/", "/v2/cms/base/manifests/1"]  # the one 401, then the login, once
    assert ("ana/x", "1") in registry.storage.manifests


def test_a_challenge_from_another_origin_is_never_answered(token_scene):
    scene, service = token_scene
    with FakeRegistry() as realm, FakeRegistry(auth=("bearer", f"http://{realm.address}/t"),
                                                storage=scene.registry.storage) as other:
        scene.registry.upload_location = \
            lambda repo, upload: f"http://{other.address}/v2/{repo}/blobs/uploads/{upload}?s=1"
        done = scene.publish()
        assert realm.received == []
        assert [r.authorization for r in other.received] == [""] * len(other.received)
    assert len(service.requests) == 1
    assert done.returncode == 4, done.stderr[-3000:]
    assert "(TO)" in failed(done) and "CI_REGISTRY_USER" in failed(done)
    assert scene.registry.requests("PUT", "/v2/ana/x/manifests/") == []


# -- M2: what was asked for is what is used -------------------------------------------------------
def index_of(scene: Scene, size_delta: int = 0) -> str:
    """FROM becomes a multi-platform index whose amd64 entry is the base's manifest."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "digest": scene.base_digest, "size": len(scene.base_manifest) + size_delta,
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    return scene.registry.add_manifest("cms/base", "multi", json.dumps(index).encode(), OCI_INDEX)


def tampered_manifest(scene: Scene) -> bytes:
    """The base's manifest with an attacker's layer appended."""
    manifest = json.loads(scene.base_manifest)
    evil = scene.registry.add_blob(b"attacker's layer")
    manifest["layers"].append({**manifest["layers"][0], "digest": evil, "size": 16})
    return json.dumps(manifest).encode()


def test_a_platform_manifest_that_is_not_its_index_entry_is_refused(scene):
    index_of(scene)
    scene.registry.serve[f"/v2/cms/base/manifests/{scene.base_digest}"] = \
        tampered_manifest(scene)
    done = scene.publish(FROM=f"{scene.address}/cms/base:multi")
    assert done.returncode == 2, done.stderr[-3000:]
    assert scene.base_digest in failed(done)
    assert scene.registry.writes == []


def test_an_index_entry_whose_size_is_not_the_manifests_is_refused(scene):
    index_of(scene, size_delta=7)
    done = scene.publish(FROM=f"{scene.address}/cms/base:multi")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "size" in failed(done)
    assert scene.registry.writes == []


def test_a_digest_pinned_index_is_enforced_down_to_the_config(scene):
    pinned = index_of(scene)
    config_digest = json.loads(scene.base_manifest)["config"]["digest"]
    scene.registry.serve[f"/v2/cms/base/blobs/{config_digest}"] = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/evil"]},
         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    done = scene.publish(FROM=f"{scene.address}/cms/base@{pinned}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert config_digest in failed(done)
    assert scene.registry.writes == []


def test_a_manifest_too_large_to_be_one_is_refused(scene):
    scene.registry.serve["/v2/cms/base/manifests/1"] = b" " * (17 << 20)
    done = scene.publish()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "larger than" in failed(done)
    assert scene.registry.writes == []


# -- L1: digests are checked before they are used in a path ---------------------------------------
def test_a_digest_from_the_registry_that_is_a_path_is_never_requested(scene):
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "digest": "sha256:x/../../victim/manifests/prod", "size": 10,
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    scene.registry.add_manifest("cms/base", "multi", json.dumps(index).encode(), OCI_INDEX)
    done = scene.publish(FROM=f"{scene.address}/cms/base:multi")
    assert done.returncode == 2, done.stderr[-3000:]
    assert [r.path for r in scene.registry.received if "victim" in r.path or ".." in r.path] == []
    assert scene.registry.writes == []


def test_a_base_layer_digest_of_an_unknown_algorithm_is_refused_before_the_push(scene):
    manifest = json.loads(scene.base_manifest)
    manifest["layers"][0]["digest"] = "sha1:" + "0" * 40
    scene.registry.add_manifest("cms/base", "odd", json.dumps(manifest).encode(),
                                "application/vnd.docker.distribution.manifest.v2+json")
    done = scene.publish(FROM=f"{scene.address}/cms/base:odd")
    assert done.returncode == 2, done.stderr[-3000:]
    assert scene.registry.writes == []
    assert [r.path for r in scene.registry.received if "sha1:" in r.path] == []


# -- M3: every request has a deadline -------------------------------------------------------------
def test_a_manifest_sent_byte_by_byte_fails_at_the_docker_timeout(scene):
    scene.registry.drip["/v2/cms/base/manifests/1"] = 0.25
    done = scene.publish(LWC_DOCKER_TIMEOUT="2")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "LWC_DOCKER_TIMEOUT" in failed(done)
    assert scene.registry.writes == []


def test_headers_sent_byte_by_byte_fail_at_the_docker_timeout(scene):
    scene.registry.drip_headers.add("/v2/cms/base/manifests/1")
    done = scene.publish(LWC_DOCKER_TIMEOUT="2")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "LWC_DOCKER_TIMEOUT" in failed(done)


def test_a_token_realm_that_never_answers_fails_at_the_docker_timeout(tmp_path):
    with Silent() as realm:
        registry = FakeRegistry(auth=("bearer", f"http://{realm.address}/token"))
        scene = scene_with(registry, tmp_path)
        try:
            done = scene.publish(LWC_DOCKER_TIMEOUT="2")
        finally:
            registry.stop()
        assert realm.connections >= 1
    assert done.returncode == 3, done.stderr[-3000:]
    assert "LWC_DOCKER_TIMEOUT" in failed(done)


def test_a_base_layer_streamed_slowly_from_another_registry_fails_at_the_transfer_timeout(
        scene):
    with FakeRegistry() as source:
        source.add_image("cms/base", "1", [b"x" * 4000])
        source.drip["/v2/cms/base/blobs/"] = 0.01
        done = scene.publish(FROM=f"{source.address}/cms/base:1", LWC_TRANSFER_TIMEOUT="2",
                             LWC_DOCKER_TIMEOUT="30")
    assert done.returncode == 8, done.stderr[-3000:]
    assert "LWC_TRANSFER_TIMEOUT" in failed(done)
    assert scene.registry.requests("PUT", "/v2/ana/x/manifests/") == []


# -- L4: what the registry says is checked before it is logged or reported ------------------------
def test_a_hostile_content_digest_never_reaches_the_report_or_the_log(scene):
    scene.registry.content_digest = "sha256:abc $(id) \x1b[2J"
    done = scene.publish()
    assert done.returncode == 0, done.stderr[-3000:]
    pushed, _ = scene.registry.storage.manifests[("ana/x", "1")]
    report = (scene.project / "lwcontainer.env").read_text()
    assert f"{scene.address}/ana/x@{sha256(pushed)}" in report
    logged = json.dumps(done.records)
    for text in (report, done.stderr, done.stdout, logged):
        assert "$(id)" not in text and "\\u001b" not in text and "\x1b" not in text
    assert done.events("registry_digest_ignored")


def test_a_registry_error_message_reaches_the_log_without_control_characters(scene):
    scene.registry.error_text["/v2/ana/x/blobs/uploads/"] = "no \x1b[2J\x1b]0;owned\x07 way"
    done = scene.publish()
    assert done.returncode == 8, done.stderr[-3000:]
    message = failed(done)  # as the log has it, decoded
    assert "no" in message and "way" in message
    assert "\x1b" not in message and "\x07" not in message


# -- the artifact from another job ----------------------------------------------------------------
@pytest.mark.parametrize("lie", ["link", "diff_id", "negative", "truncated"])
def test_a_hostile_artifact_exits_2_and_the_registry_receives_nothing(scene, lie):
    project = scene.project
    if lie == "link":
        outside = scene.tmp / "outside"
        outside.mkdir()
        (outside / "secret").write_text("a file outside the project\n")
        meta = write_artifact(outside)
        (project / LAYER).unlink()
        (project / LAYER).symlink_to(outside / LAYER)
        (project / META).write_text(json.dumps(meta))
    elif lie == "diff_id":
        write_artifact(project, diff_id="sha256:" + "0" * 64)
    elif lie == "negative":
        write_artifact(project, uncompressed_size=-1)
    else:
        data = (project / LAYER).read_bytes()[:-9]
        meta = json.loads((project / META).read_text())
        (project / LAYER).write_bytes(data)
        (project / META).write_text(json.dumps({**meta, "size": len(data),
                                                "digest": sha256(data)}))
    done = scene.publish()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "nothing was uploaded" in failed(done)
    assert scene.registry.received == []
    assert not (project / "lwcontainer.env").exists()
