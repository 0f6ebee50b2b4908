"""Publishing through the registry API: FROM's manifest and config read, the captured layer
appended, and layer, config and manifest pushed for every target. Base layers never touch this
machine's disk: on the same registry they are mounted across repositories; from another registry
they are streamed blob by blob, and skipped where the target already has them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from .artifact import Layer
from .image import Base, NewImage, pick_platform
from .registry import (INDEX_TYPES, Credentials, RegistryClient, RegistryError, Renewed,
                       Untrusted, check_digest)
from .transport import Limit
from ...config.reference import Reference, insecure_registry
from ...config.settings import Settings
from ...errors import ConfigError, EngineError, LoginError, PushError
from ...output.logs import get_logger
from ...retry import Backoff

T = TypeVar("T")


@dataclass
class Transfer:
    """What one publish moved, for the log and the benchmark."""

    mounted: int = 0
    copied: int = 0
    skipped: int = 0
    uploaded: int = 0


class Publisher:
    """The registries of one run: one client per host, authenticated once for every repository
    this run reads or writes there."""

    def __init__(self, settings: Settings, backoff: float = 1.0) -> None:
        self.s = settings
        self.backoff = backoff
        self.log = get_logger()
        self.sent = [0]
        self.transfer = Transfer()
        self.source = settings.from_image
        scopes: dict[str, set[str]] = {}
        scopes.setdefault(self.source.normalized.domain, set()).add(
            f"repository:{self.source.normalized.path}:pull")
        for target in settings.targets:
            scopes.setdefault(target.normalized.domain, set()).add(
                f"repository:{target.normalized.path}:pull,push")
        self.clients = {host: self._client(host, wanted) for host, wanted in scopes.items()}

    def _client(self, host: str, scopes: Iterable[str]) -> RegistryClient:
        credentials = None
        if self.s.registry and host == self.s.registry and self.s.registry_password:
            credentials = Credentials(self.s.registry_user or "", self.s.registry_password)
        insecure = insecure_registry(host, self.s.insecure_registries)
        return RegistryClient(host, credentials, insecure, scopes, self.sent,
                              small=Limit(self.s.docker_timeout, "LWC_DOCKER_TIMEOUT"),
                              transfer=Limit(self.s.transfer_timeout, "LWC_TRANSFER_TIMEOUT"))

    # -- FROM -------------------------------------------------------------------------------
    def base(self, layer: Layer) -> Base:
        """FROM's manifest (for the capture's platform) and config, each checked against the
        digest it was asked by: FROM's own digest when it has one, the index entry's digest and
        size, the manifest's config digest and size. Failures name FROM."""
        ref = self.source
        client = self.clients[ref.normalized.domain]
        repository = ref.normalized.path
        try:
            manifest, resolved, _ = client.manifest(repository, ref.digest or ref.tag or "latest")
            if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
                entry = pick_platform(manifest, layer.os, layer.architecture, str(ref))
                manifest, _, _ = client.manifest(repository, entry["digest"], entry["size"])
            config_ref = _descriptor(manifest.get("config"), "its config")
            for index, blob in enumerate(_layers(manifest)):
                _descriptor(blob, f"its layer {index + 1}")
            config = client.blob_json(repository, config_ref["digest"], config_ref["size"])
        except RegistryError as exc:
            raise self._base_failure(exc) from None
        self.log.info("base_resolved", image=str(ref), digest=resolved,
                      layers=len(manifest["layers"]))
        return Base(manifest, resolved, config, config_ref["digest"])

    def _base_failure(self, exc: RegistryError) -> Exception:
        ref = self.source
        if isinstance(exc, Untrusted):
            return ConfigError("FROM", f"{ref} cannot be trusted as its registry answered it "
                                       f"(nothing was pushed): {exc}")
        if exc.not_found:
            return ConfigError("FROM", f"{ref} does not exist in its registry: {exc}")
        if exc.auth:
            if self.s.registry == ref.normalized.domain:
                return LoginError(f"reading {ref} (FROM) was refused with CI_REGISTRY_USER's "
                                  f"login: {exc}. Check FROM, that this login may read it (a job "
                                  f"token reads only the projects that allow it) and the password "
                                  f"(CI_REGISTRY_PASSWORD, else CI_JOB_TOKEN)")
            return ConfigError("FROM", f"{ref} could not be read anonymously: it may be "
                                       f"misspelled, or private on a registry other than "
                                       f"CI_REGISTRY: {exc}")
        return EngineError(f"FROM's registry {ref.normalized.domain} failed: {exc}")

    # -- targets ----------------------------------------------------------------------------
    def push(self, image: NewImage, layer: Layer, retries: int) -> str:
        """Every target, each retried as a whole; returns TO's ``repository@digest``."""
        digest = ""
        for target in self.s.targets:
            pushed, agrees = self._retrying(lambda t=target: self._push_one(t, image, layer),
                                            retries, target)
            if not agrees:
                self.log.warning("registry_digest_ignored", tag=str(target), digest=pushed,
                                 reason="the registry reported another digest (or none that "
                                        "is valid) for the manifest; the computed one is kept")
            self.log.info("pushed", tag=str(target), digest=pushed)
            if not digest:
                digest = f"{self.s.to_image.repository}@{pushed}"
        self.log.info("publish_transfer", blobs_mounted=self.transfer.mounted,
                      blobs_copied=self.transfer.copied, blobs_present=self.transfer.skipped,
                      blobs_uploaded=self.transfer.uploaded, bytes_sent=self.sent[0])
        return digest

    def _push_one(self, target: Reference, image: NewImage, layer: Layer) -> tuple[str, bool]:
        client = self.clients[target.normalized.domain]
        repository = target.normalized.path
        base_layers = image.layers[:-1]
        for blob in base_layers:
            self._base_blob(client, repository, blob)
        if not client.has_blob(repository, layer.digest):
            self._streamed(lambda: self._upload_layer(client, repository, layer))
            self.transfer.uploaded += 1
        if not client.has_blob(repository, image.config_digest):
            client.upload(repository, image.config_digest, image.config, len(image.config))
            self.transfer.uploaded += 1
        return client.put_manifest(repository, target.tag or "latest", image.manifest,
                                   image.media_type)

    def _base_blob(self, client: RegistryClient, repository: str, blob: dict) -> None:
        digest = blob["digest"]
        if client.has_blob(repository, digest):
            self.transfer.skipped += 1
            return
        source_host, source_repo = self.source.normalized.domain, self.source.normalized.path
        if source_host == client.host and client.mount(repository, digest, source_repo):
            self.transfer.mounted += 1
            return
        self._streamed(lambda: self._copy(client, repository, blob))
        self.transfer.copied += 1

    @staticmethod
    def _upload_layer(client: RegistryClient, repository: str, layer: Layer) -> None:
        with layer.open() as file:  # streamed, whatever its size
            client.upload(repository, layer.digest, file, layer.size)

    def _copy(self, client: RegistryClient, repository: str, blob: dict) -> None:
        """A base layer from FROM's registry, streamed to the target (never on disk)."""
        source = self.clients[self.source.normalized.domain]
        stream = source.blob_stream(self.source.normalized.path, blob["digest"])
        try:
            client.upload(repository, blob["digest"], stream, blob["size"])
        finally:
            stream.close()  # a copy that failed midway: the source's answer ends now

    def _streamed(self, step: Callable[[], None]) -> None:
        """A step whose body is a stream, which cannot be sent twice: when the registry's token
        expired while it was sent (``Renewed``: the client has a new one), the step runs once
        more from the start, its stream opened anew. A 401 again, right after the new token, is
        a refusal (``_retrying``)."""
        try:
            step()
        except Renewed as exc:
            self.log.info("token_renewed", reason=str(exc))
            try:
                step()
            except Renewed as again:
                raise RegistryError(f"{again}, and again right after a new token", 401) from None

    def _retrying(self, action: Callable[[], T], retries: int, target: Reference) -> T:
        backoff = Backoff(retries, self.backoff)
        while True:
            try:
                return action()
            except Untrusted as exc:
                raise ConfigError("TO", f"pushing {target}: {exc}") from None
            except RegistryError as exc:
                if exc.auth:
                    raise self._refused(target, exc) from None
                if not backoff.again(self.log, f"push {target}", str(exc)):
                    raise PushError(f"pushing {target} failed after {backoff.failed} attempt(s): "
                                    f"{exc}. The captured layer is kept; run 'lwcontainer "
                                    f"publish' again (same settings) once the registry is "
                                    f"back") from None

    def _refused(self, target: Reference, exc: RegistryError) -> LoginError:
        """A push the registry refused (never retried): the setting that named the target, and
        whose login it was."""
        setting = "TO" if target == self.s.to_image else "LWC_EXTRA_TAGS or LWC_TAG_LATEST"
        host = target.normalized.domain
        if self.clients[host].credentials is not None:
            return LoginError(f"pushing {target} ({setting}) was refused with CI_REGISTRY_USER's "
                              f"login: {exc}. Check that this login may push there (a job token "
                              f"may push only to its own project's CI_REGISTRY_IMAGE and below) "
                              f"and the password (CI_REGISTRY_PASSWORD, else CI_JOB_TOKEN)")
        return LoginError(f"pushing {target} ({setting}) was refused: {exc}. This run logs in "
                          f"only to CI_REGISTRY ({self.s.registry or 'not set'}), and {host} is "
                          f"another registry: push to CI_REGISTRY, or set CI_REGISTRY and its "
                          f"login for {host}")


def _descriptor(value: object, what: str) -> dict:
    """A manifest's reference to a blob: a valid digest and a size that is not negative."""
    if not isinstance(value, dict):
        raise Untrusted(f"the manifest's {what} is not a descriptor")
    check_digest(value.get("digest"), f"the manifest's {what}")
    size = value.get("size")
    if type(size) is not int or size < 0:
        raise Untrusted(f"the manifest's {what} has no valid size")
    return value


def _layers(manifest: dict) -> list:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise Untrusted("the manifest has no list of layers")
    return layers
