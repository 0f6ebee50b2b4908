"""Captured-layer artifacts made in Python, as the capture job leaves them (lwcontainer-layer.json
and lwcontainer-layer.tar.gz): a real tar with one file, gzip'd, and its description."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

LAYER = "lwcontainer-layer.tar.gz"
META = "lwcontainer-layer.json"


def layer_tar(files: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (files or {"opt/analysis/result.txt": b"analysis output\n"}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def description(tar: bytes, compressed: bytes, **overrides) -> dict:
    meta = {"format": 1, "generator": "lwcontainer test",
            "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest(),
            "digest": "sha256:" + hashlib.sha256(compressed).hexdigest(),
            "size": len(compressed), "uncompressed_size": len(tar), "os": "linux",
            "architecture": "amd64", "build_script": ".gitlab/build.sh", "user": "0:0",
            "created": 1700000000, "entries": 1, "whiteouts": 0}
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def write_artifact(directory: Path, tar: bytes | None = None, compressed: bytes | None = None,
                   **overrides) -> dict:
    """Writes both files; ``overrides`` change the description (None removes a key)."""
    tar = layer_tar() if tar is None else tar
    compressed = gzip.compress(tar, mtime=0) if compressed is None else compressed
    (directory / LAYER).write_bytes(compressed)
    meta = description(tar, compressed, **overrides)
    (directory / META).write_text(json.dumps(meta))
    return meta
