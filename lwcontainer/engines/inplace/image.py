"""The base image as its registry has it and the new image's config and manifest: plain values
and pure functions, no requests. The captured layer is artifact.py's."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .artifact import Layer
from ...errors import ConfigError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: manifest type -> (config type, gzip layer type): the new layer keeps the base's family.
FAMILY = {
    DOCKER_MANIFEST: ("application/vnd.docker.container.image.v1+json",
                      "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    OCI_MANIFEST: ("application/vnd.oci.image.config.v1+json",
                   "application/vnd.oci.image.layer.v1.tar+gzip"),
}
ROLE_LABEL = "lwcontainer.role"


@dataclass(frozen=True)
class Base:
    """FROM as its registry has it, for one platform."""

    manifest: dict
    digest: str          # what FROM resolved to (the index's digest for a multi-platform FROM)
    config: dict
    config_digest: str

    @property
    def media_type(self) -> str:
        return self.manifest.get("mediaType") or OCI_MANIFEST


@dataclass(frozen=True)
class NewImage:
    config: bytes
    config_digest: str
    manifest: bytes
    media_type: str

    @property
    def layers(self) -> list[dict]:
        return json.loads(self.manifest)["layers"]


def pick_platform(index: dict, os: str, architecture: str, where: str) -> dict:
    """The index entry (digest and size) for the platform the capture ran on. The entry's
    digest and size are checked by the caller, who fetches the manifest they name."""
    entries = index.get("manifests")
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == os and platform.get("architecture") == architecture:
            size = entry.get("size")
            if type(size) is not int or size < 0:
                raise ConfigError("FROM", f"{where}: the index entry for {os}/{architecture} "
                                          "has no valid size")
            return entry
    offered = sorted(_plain(f"{(e.get('platform') or {}).get('os')}/"
                            f"{(e.get('platform') or {}).get('architecture')}")
                     for e in entries)
    raise ConfigError("FROM", f"{where} has no image for {os}/{architecture}, where the capture "
                              f"ran (it has {', '.join(offered) or 'none'})")


def _plain(text: str) -> str:
    """A registry's word, fit for a message: printable, short."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 40 else text[:40] + "…"


def assemble(base: Base, layer: Layer, labels: dict[str, str]) -> NewImage:
    """Base config + one layer: rootfs.diff_ids and history grow by one, the labels are added,
    and everything else of the base's config (Cmd, Entrypoint, WorkingDir, User, Env) stays."""
    if base.media_type not in FAMILY:
        raise ConfigError("FROM", f"its manifest type {base.media_type} is not one lwcontainer "
                                  "can add a layer to")
    platform = (base.config.get("os"), base.config.get("architecture"))
    if platform != (layer.os, layer.architecture):
        raise ConfigError("FROM", f"its image is for {_plain(str(platform[0]))}/"
                                  f"{_plain(str(platform[1]))}, and the layer was captured on "
                                  f"{layer.os}/{layer.architecture}: a layer goes only onto the "
                                  "image it was built in (run the capture job on a runner of "
                                  "FROM's platform)")
    config_type, layer_type = FAMILY[base.media_type]
    config = json.loads(json.dumps(base.config))  # a deep copy
    created = labels.get("org.opencontainers.image.created")
    inner = config.setdefault("config", {})
    inner["Labels"] = {**(inner.get("Labels") or {}), ROLE_LABEL: "image", **labels}
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(
        layer.diff_id)
    config.setdefault("history", []).append({
        "created": created,
        "created_by": f"lwcontainer (inplace): /bin/bash {layer.build_script}",
        "comment": "the build's changes to the root filesystem, captured in FROM",
    })
    if created:
        config["created"] = created
    config_bytes = _canonical(config)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": base.media_type,
        "config": {"mediaType": config_type, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [*base.manifest["layers"],
                   {"mediaType": layer_type, "digest": layer.digest, "size": layer.size}],
    }
    return NewImage(config_bytes, config_digest, _canonical(manifest), base.media_type)


def _canonical(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()
