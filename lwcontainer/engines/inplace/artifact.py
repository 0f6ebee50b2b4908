"""The captured layer as ``lwcontainer publish`` receives it: ``lwcontainer-layer.json`` and
``lwcontainer-layer.tar.gz`` in the project directory, an artifact of another job and so not
trusted. Before anything is sent anywhere, the layer is checked to be exactly what its
description says:

- both are regular files directly in the project directory (opened with ``O_NOFOLLOW`` relative
  to the directory itself: a link, a FIFO or a device is refused, and nothing outside the
  project can be read in their place), each with one name (no hard link to another file);
- the description is a JSON object of a known format (format 1, as every capture script so far
  writes it); keys this lwcontainer does not know are ignored, so a newer capture script may
  add notes (such as one about extended attributes) without breaking an older publish;
- digests are ``sha256:`` and 64 lower-case hex digits, sizes are integers and not negative,
  the platform is a plain word, the build script's name printable;
- ``captured_in``, when there, is printable: the image the capture ran in (the engine compares
  it with FROM before anything is read from a registry);
- the file's size and sha256 are ``size`` and ``digest``; the sha256 and length of its
  uncompressed stream are ``diff_id`` and ``uncompressed_size`` (the decompression stops as soon
  as it would pass that length).

Any failure is a ConfigError (exit 2) that names the file and the problem; the caller has not
contacted a registry yet. The checked file is identified by device, inode and ctime: the upload
opens it again the same way and refuses a file that is not the one checked (the registry checks
the content's digest itself).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import ConfigError

LAYER_FILE = "lwcontainer-layer.tar.gz"
META_FILE = "lwcontainer-layer.json"
FORMAT = 1  # what this lwcontainer's capture script writes
FORMATS = (1,)  # what it reads
MAX_META_BYTES = 1 << 20
CHUNK = 1 << 20

SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
PLATFORM_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def refuse(name: str, problem: str) -> ConfigError:
    return ConfigError(name, f"{problem}; nothing was uploaded")


@dataclass(frozen=True)
class Layer:
    """What the capture wrote, checked: the layer file and its description."""

    path: Path
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    os: str
    architecture: str
    build_script: str
    created: int
    captured_in: str = ""  # the image the capture ran in (CI_JOB_IMAGE, else FROM), if known
    identity: tuple[int, ...] = ()  # (st_dev, st_ino, st_ctime_ns) of the file checked

    @classmethod
    def read(cls, directory: Path) -> Layer:
        return read(directory)

    def open(self) -> BinaryIO:
        """The checked file, opened again without following links; refused if it is not the
        file that was checked (replaced since)."""
        fd = _open_in(self.path.parent, self.path.name)
        info = os.fstat(fd)
        if _identity(info) != self.identity or info.st_size != self.size:
            os.close(fd)
            raise refuse(LAYER_FILE, f"{self.path} was replaced after it was checked")
        return os.fdopen(fd, "rb")


def read(directory: Path) -> Layer:
    """The layer in ``directory``, checked as the module says."""
    project = Path(os.path.realpath(directory))
    try:
        meta_fd = _open_in(project, META_FILE)
        layer_fd = _open_in(project, LAYER_FILE)
    except FileNotFoundError:
        raise ConfigError("LWC_ENGINE", f"no captured layer in {directory} ({LAYER_FILE}, "
                                        f"{META_FILE}): run the capture job first "
                                        "(bash .gitlab/lwcontainer-capture.sh in FROM)") from None
    with os.fdopen(meta_fd, "rb") as meta_file, os.fdopen(layer_fd, "rb") as layer_file:
        _regular(meta_file, project / META_FILE)
        info = _regular(layer_file, project / LAYER_FILE)
        text = meta_file.read(MAX_META_BYTES + 1)
        if len(text) > MAX_META_BYTES:
            raise refuse(META_FILE, f"{project / META_FILE} is larger than "
                                    f"{MAX_META_BYTES} bytes: not a layer description")
        fields = describe(text, project / META_FILE)
        layer = Layer(project / LAYER_FILE, identity=_identity(info), **fields)
        if info.st_size != layer.size:
            raise refuse(LAYER_FILE, f"{layer.path} has {info.st_size} bytes and {META_FILE} "
                                     f"says {layer.size}: the artifact is truncated or swapped; "
                                     "capture again")
        _check_content(layer_file, layer)
    return layer


def describe(text: bytes, where: Path) -> dict:
    """The fields of a layer description, each checked; unknown keys are ignored."""
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(META_FILE, f"{where} is not a layer description: {exc}") from None
    if not isinstance(meta, dict):
        raise refuse(META_FILE, f"{where} is not a layer description (not a JSON object)")
    version = meta.get("format")
    if type(version) is not int or version not in FORMATS:
        raise refuse(META_FILE, f"{where} has format {_show(version)}; this lwcontainer reads "
                                f"{', '.join(map(str, FORMATS))}: regenerate the capture script "
                                "with 'lwcontainer init --force' (the same lwcontainer version "
                                "as the publish job)")
    fields = {}
    for key in ("diff_id", "digest"):
        fields[key] = _field(meta, key, where, lambda v: isinstance(v, str)
                             and SHA256_RE.fullmatch(v) is not None, "sha256: and 64 hex digits")
    for key in ("size", "uncompressed_size", "created"):
        fields[key] = _field(meta, key, where, lambda v: type(v) is int and v >= 0,
                             "an integer, not negative")
    for key in ("os", "architecture"):
        fields[key] = _field(meta, key, where, lambda v: isinstance(v, str)
                             and PLATFORM_RE.fullmatch(v) is not None, "a plain word")
    fields["build_script"] = _field(meta, "build_script", where,
                                    lambda v: isinstance(v, str) and 0 < len(v) <= 4096
                                    and v.isprintable(), "a printable path")
    if meta.get("captured_in"):  # written since 0.1.0's first captures: optional
        fields["captured_in"] = _field(meta, "captured_in", where,
                                       lambda v: isinstance(v, str) and len(v) <= 4096
                                       and v.isprintable(), "an image reference")
    return fields


def _field(meta: dict, key: str, where: Path, valid, what: str):
    if key not in meta:
        raise refuse(META_FILE, f"{where} has no {key!r}: not a layer description")
    value = meta[key]
    if not valid(value):
        raise refuse(META_FILE, f"{where}: {key} is {_show(value)}; it must be {what}")
    return value


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 80 else text[:80] + "…"


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _open_in(directory: Path, name: str) -> int:
    """``name`` directly in ``directory``, not following a link (and not blocking on a FIFO)."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.open(name, _NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            kind = META_FILE if name == META_FILE else LAYER_FILE
            raise refuse(kind, f"{directory / name} is a symbolic link; the captured layer "
                               "must be a regular file in the project directory") from None
        raise
    finally:
        os.close(dir_fd)


def _regular(file: BinaryIO, path: Path) -> os.stat_result:
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode):
        raise refuse(path.name, f"{path} is not a regular file; the captured layer must be a "
                                "regular file in the project directory")
    if info.st_nlink != 1:
        raise refuse(path.name, f"{path} has {info.st_nlink} names (a hard link): it could be "
                                "any file's content; the capture writes a file of its own")
    os.set_blocking(file.fileno(), True)
    return info


def _check_content(file: BinaryIO, layer: Layer) -> None:
    """One pass: the file's sha256, and the sha256 and length of its gzip stream(s)."""
    compressed, uncompressed = hashlib.sha256(), hashlib.sha256()
    inflate = zlib.decompressobj(wbits=31)
    total, members, started = 0, 0, False  # started: the current member has had input
    try:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            compressed.update(chunk)
            while chunk:
                started = True
                # at most one byte past the declared length: a bomb stops there
                out = inflate.decompress(chunk, max(layer.uncompressed_size - total, 0) + 1)
                total += len(out)
                uncompressed.update(out)
                if total > layer.uncompressed_size:
                    raise refuse(LAYER_FILE, f"{layer.path} unpacks to more than the "
                                             f"{layer.uncompressed_size} bytes {META_FILE} says")
                if inflate.eof:  # a member ends; another may follow
                    chunk, members, started = inflate.unused_data, members + 1, False
                    inflate = zlib.decompressobj(wbits=31)
                else:
                    chunk = inflate.unconsumed_tail
        complete = members > 0 and not started
    except zlib.error as exc:
        raise refuse(LAYER_FILE, f"{layer.path} is not a gzip stream: {exc}") from None
    found = "sha256:" + compressed.hexdigest()
    if found != layer.digest:
        raise refuse(LAYER_FILE, f"{layer.path} is not the layer {META_FILE} describes "
                                 f"({found}, expected {layer.digest}): capture again")
    diff_id = "sha256:" + uncompressed.hexdigest()
    if not complete or total != layer.uncompressed_size or diff_id != layer.diff_id:
        raise refuse(LAYER_FILE, f"{layer.path} unpacks to {total} bytes with sha256 "
                                 f"{diff_id}, and {META_FILE} says {layer.uncompressed_size} "
                                 f"bytes, diff_id {layer.diff_id}: capture again")
