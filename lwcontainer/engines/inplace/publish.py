"""Publishing through the registry API: FROM's manifest and config read, the captured layer
appended, and layer, config and manifest pushed for every target. Base layers never touch this
machine's disk: on the same registry they are mounted across repositories; from another registry
they are streamed blob by blob, and skipped where the target already has them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from .artifact import Layer
from .image import Base, NewImage, pick_platform
from .registry import INDEX_TYPES, Credentials, RegistryClient, RegistryError
from ...config.reference import Reference, insecure_registry
from ...config.settings import Settings
from ...errors import ConfigError, EngineError, LoginError, PushError
from ...output.logs import get_logger
from ...retry import Backoff


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
        return RegistryClient(host, credentials, insecure, scopes, self.sent)

    # -- FROM -------------------------------------------------------------------------------
    def base(self, layer: Layer) -> Base:
        """FROM's manifest (for the capture's platform) and config; failures name FROM."""
        ref = self.source
        client = self.clients[ref.normalized.domain]
        repository = ref.normalized.path
        try:
            manifest, digest, _ = client.manifest(repository, ref.digest or ref.tag or "latest")
            resolved = digest
            if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
                chosen = pick_platform(manifest, layer.os, layer.architecture, str(ref))
                manifest, _, _ = client.manifest(repository, chosen)
            config_digest = manifest["config"]["digest"]
            config = client.blob_json(repository, config_digest)
        except RegistryError as exc:
            raise self._base_failure(exc) from None
        if ref.digest and resolved != ref.digest:
            raise ConfigError("FROM", f"{ref.repository} answered {resolved} for {ref.digest}")
        self.log.info("base_resolved", image=str(ref), digest=resolved,
                      layers=len(manifest.get("layers", ())))
        return Base(manifest, ref.digest or resolved, config, config_digest)

    def _base_failure(self, exc: RegistryError) -> Exception:
        ref = self.source
        if exc.not_found:
            return ConfigError("FROM", f"{ref} does not exist in its registry: {exc}")
        if exc.auth:
            if self.s.registry == ref.normalized.domain:
                return LoginError(f"reading {ref} (FROM) was refused with CI_REGISTRY_USER's "
                                  f"login: {exc}")
            return ConfigError("FROM", f"{ref} could not be read anonymously: it may be "
                                       f"misspelled, or private on a registry other than "
                                       f"CI_REGISTRY: {exc}")
        return EngineError(f"FROM's registry {ref.normalized.domain} failed: {exc}")

    # -- targets ----------------------------------------------------------------------------
    def push(self, image: NewImage, layer: Layer, retries: int) -> str:
        """Every target, each retried as a whole; returns TO's ``repository@digest``."""
        digest = ""
        for target in self.s.targets:
            pushed = self._retrying(lambda t=target: self._push_one(t, image, layer), retries,
                                    str(target))
            self.log.info("pushed", tag=str(target), digest=pushed)
            if not digest:
                digest = f"{self.s.to_image.repository}@{pushed}"
        self.log.info("publish_transfer", blobs_mounted=self.transfer.mounted,
                      blobs_copied=self.transfer.copied, blobs_present=self.transfer.skipped,
                      blobs_uploaded=self.transfer.uploaded, bytes_sent=self.sent[0])
        return digest

    def _push_one(self, target: Reference, image: NewImage, layer: Layer) -> str:
        client = self.clients[target.normalized.domain]
        repository = target.normalized.path
        base_layers = image.layers[:-1]
        for blob in base_layers:
            self._base_blob(client, repository, blob)
        if not client.has_blob(repository, layer.digest):
            with layer.open() as file:  # streamed, whatever its size
                client.upload(repository, layer.digest, file, layer.size)
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
        stream = self.clients[source_host].blob_stream(source_repo, digest)
        client.upload(repository, digest, stream, int(blob.get("size", -1)))
        self.transfer.copied += 1

    def _retrying(self, action: Callable[[], str], retries: int, what: str) -> str:
        backoff = Backoff(retries, self.backoff)
        while True:
            try:
                return action()
            except RegistryError as exc:
                if exc.auth:
                    raise LoginError(f"pushing {what} was refused: {exc}") from None
                if not backoff.again(self.log, f"push {what}", str(exc)):
                    raise PushError(f"pushing {what} failed after {backoff.failed} attempt(s): "
                                    f"{exc}. The captured layer is kept; run 'lwcontainer "
                                    f"publish' again (same settings) once the registry is "
                                    f"back") from None
