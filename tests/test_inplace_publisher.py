"""Publisher and RegistryClient in this process, with no engine: the recording registry of
fakeregistry.py behind the test token service (tokenserver.py), as GitLab's registry is."""
from __future__ import annotations

import json
import time

import pytest

from artifacts import write_artifact
from fakeregistry import FakeRegistry, Received, sha256
from lwcontainer.config.settings import Settings
from lwcontainer.engines.inplace.artifact import read
from lwcontainer.engines.inplace.image import assemble
from lwcontainer.engines.inplace.publish import Publisher
from lwcontainer.engines.inplace.registry import RegistryClient, RegistryError
from lwcontainer.engines.inplace.transport import Limit
from lwcontainer.errors import ExitCode, LoginError, PushError
from tokenserver import TokenService

USER, PASSWORD = "ci-user", "job-token-s3cret"


@pytest.fixture
def service(tmp_path):
    service = TokenService(tmp_path, USER, PASSWORD)
    service.realm = service.start()
    yield service
    service.stop()


@pytest.fixture
def registry(service):
    registry = FakeRegistry(auth=("bearer", service.realm))
    registry.tokens = service.issued
    registry.start()
    registry.add_image("public/base", "1", [b"base layer one", b"base layer two"])
    yield registry
    registry.stop()


def publisher(tmp_path, registry: FakeRegistry, **extra: str) -> tuple[Publisher, object]:
    project = tmp_path / "project"
    (project / ".gitlab").mkdir(parents=True, exist_ok=True)
    (project / ".gitlab" / "build.sh").write_text("true\n")
    write_artifact(project)
    settings = Settings.from_mapping({
        "HOME": str(tmp_path), "FROM": f"{registry.address}/public/base:1",
        "TO": f"{registry.address}/ana/x:1", "CI_REGISTRY": registry.address,
        "CI_REGISTRY_USER": USER, "CI_JOB_TOKEN": PASSWORD, **extra}, cwd=project)
    return Publisher(settings, backoff=0.5), read(project)


def test_one_token_for_from_and_to_and_the_base_layers_are_mounted(tmp_path, registry, service):
    pub, layer = publisher(tmp_path, registry)
    base = pub.base(layer)
    image = assemble(base, layer, {})
    pushed = pub.push(image, layer, retries=0)
    assert [set(r["scopes"]) for r in service.requests] == [
        {"repository:public/base:pull", "repository:ana/x:pull,push"}]
    assert service.requests[0]["authenticated"]
    mounts = registry.requests("POST", "/v2/ana/x/blobs/uploads/?mount=")
    assert len(mounts) == 2 and (pub.transfer.mounted, pub.transfer.uploaded) == (2, 2)
    stored, _ = registry.storage.manifests[("ana/x", "1")]
    assert pushed == f"{registry.address}/ana/x@{sha256(stored)}"
    assert json.loads(stored)["layers"][-1]["digest"] == layer.digest


def test_an_expired_token_is_renewed_once(tmp_path, registry, service):
    pub, layer = publisher(tmp_path, registry)
    image = assemble(pub.base(layer), layer, {})
    service.issued.clear()  # every token given so far expires
    pub.push(image, layer, retries=0)
    assert len(service.requests) == 2
    assert ("ana/x", "1") in registry.storage.manifests


def expire_at(service: TokenService, method: str, marker: str, times: int = 1):
    """A hook for FakeRegistry.before: every token given so far expires as the request (method,
    a path containing ``marker``) arrives, the first ``times`` times (0: every time)."""
    seen: list[Received] = []

    def hook(received: Received) -> None:
        if received.method == method and marker in received.path:
            seen.append(received)
            if not times or len(seen) <= times:
                service.issued.clear()
    return hook


def sent(registry: FakeRegistry, digest: str) -> list[Received]:
    """The PUTs that ended an upload of ``digest``."""
    return [r for r in registry.requests("PUT", "/v2/ana/x/blobs/uploads/")
            if r.path.endswith(f"digest={digest}")]


def test_a_token_that_expires_during_the_layers_upload_is_renewed_and_the_upload_sent_again(
        tmp_path, registry, service):
    pub, layer = publisher(tmp_path, registry)
    image = assemble(pub.base(layer), layer, {})
    registry.before.append(expire_at(service, "PUT", f"digest={layer.digest}"))
    pushed = pub.push(image, layer, retries=0)
    assert [r.body for r in sent(registry, layer.digest)] == [layer.size, layer.size]
    assert len(service.requests) == 2
    assert registry.storage.blobs[layer.digest] == layer.path.read_bytes()
    stored, _ = registry.storage.manifests[("ana/x", "1")]
    assert pushed == f"{registry.address}/ana/x@{sha256(stored)}"


def test_a_token_that_expires_during_a_copy_from_another_registry_is_renewed_and_the_copy_redone(
        tmp_path, registry, service):
    with FakeRegistry() as source:
        source.add_image("lib/base", "1", [b"x" * 300_000, b"second base layer"])
        pub, layer = publisher(tmp_path, registry, FROM=f"{source.address}/lib/base:1")
        image = assemble(pub.base(layer), layer, {})
        first = image.layers[0]["digest"]
        registry.before.append(expire_at(service, "PUT", f"digest={first}"))
        pub.push(image, layer, retries=0)
        assert len(source.requests("GET", f"/v2/lib/base/blobs/{first}")) == 2  # opened again
    assert [r.body for r in sent(registry, first)] == [300_000, 300_000]
    assert pub.transfer.copied == 2 and len(service.requests) == 2
    assert registry.storage.blobs[first] == b"x" * 300_000
    assert ("ana/x", "1") in registry.storage.manifests


def test_a_stream_refused_right_after_a_new_token_is_a_refusal_not_retried(tmp_path, registry,
                                                                           service):
    pub, layer = publisher(tmp_path, registry)
    image = assemble(pub.base(layer), layer, {})
    registry.before.append(expire_at(service, "PUT", f"digest={layer.digest}", times=0))
    with pytest.raises(LoginError) as refused:
        pub.push(image, layer, retries=3)
    assert refused.value.exit_code == ExitCode.LOGIN
    assert len(sent(registry, layer.digest)) == 2  # once, then once with a new token
    assert "TO" in str(refused.value) and "CI_REGISTRY_USER" in str(refused.value)
    assert ("ana/x", "1") not in registry.storage.manifests


def test_a_target_on_another_registry_that_asks_for_a_login_names_to_and_ci_registry(
        tmp_path, registry):
    with FakeRegistry(auth=("basic", USER, PASSWORD)) as target:
        pub, layer = publisher(tmp_path, registry, TO=f"{target.address}/ana/x:1")
        image = assemble(pub.base(layer), layer, {})
        with pytest.raises(LoginError) as refused:
            pub.push(image, layer, retries=3)
        assert [r.authorization for r in target.received] == [""] * len(target.received)
    message = str(refused.value)
    assert refused.value.exit_code == ExitCode.LOGIN
    assert f"{target.address}/ana/x:1 (TO)" in message
    assert f"only to CI_REGISTRY ({registry.address})" in message


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_a_registry_open_at_v2_but_not_in_its_repositories_gets_the_login(tmp_path, service,
                                                                          auth):
    with FakeRegistry(auth=("basic", USER, PASSWORD) if auth == "basic"
                      else ("bearer", service.realm)) as registry:
        registry.tokens = service.issued
        registry.open_root = True
        registry.add_image("public/base", "1", [b"base layer one"])
        pub, layer = publisher(tmp_path, registry)
        image = assemble(pub.base(layer), layer, {})
        pub.push(image, layer, retries=0)
        assert ("ana/x", "1") in registry.storage.manifests
        scheme = "Basic " if auth == "basic" else "Bearer "
        without = [r.path for r in registry.received if not r.authorization.startswith(scheme)]
        assert without == ["/v2/", "/v2/public/base/manifests/1"]  # then the challenge answered
    if auth == "bearer":
        assert [r["authenticated"] for r in service.requests] == [True]


def test_a_public_base_on_another_registry_is_read_anonymously(tmp_path, registry, service):
    with FakeRegistry(auth=("basic", USER, PASSWORD)) as target:
        pub, layer = publisher(tmp_path, registry, TO=f"{target.address}/ana/x:1",
                               CI_REGISTRY=target.address)
        image = assemble(pub.base(layer), layer, {})
        pub.push(image, layer, retries=0)
        assert pub.transfer.copied == 2
        assert all(r.authorization.startswith("Basic ") for r in target.received
                   if r.path != "/v2/")
    assert [r["authenticated"] for r in service.requests] == [False]
    assert all(not r.authorization.startswith("Basic ") for r in registry.received)


def test_a_failing_push_is_retried_with_the_capped_backoff_then_exits_8(tmp_path, registry,
                                                                         service, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    pub, layer = publisher(tmp_path, registry)
    image = assemble(pub.base(layer), layer, {})
    registry.error_text["/v2/ana/x/manifests/"] = "storage unavailable"
    with pytest.raises(PushError, match="failed after 4 attempt.*storage unavailable"):
        pub.push(image, layer, retries=3)
    assert waits == [0.5, 1.0, 2.0]
    assert len(registry.requests("PUT", "/v2/ana/x/manifests/")) == 4


def test_a_client_request_past_its_deadline_names_the_setting(registry):
    registry.drip["/v2/public/base/manifests/1"] = 0.2
    client = RegistryClient(registry.address, None, True, ["repository:public/base:pull"],
                            small=Limit(1, "LWC_DOCKER_TIMEOUT"))
    with pytest.raises(RegistryError, match=r"within 1s \(LWC_DOCKER_TIMEOUT\)"):
        client.manifest("public/base", "1")
