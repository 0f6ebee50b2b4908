"""The dotenv report a GitLab job can publish with ``artifacts:reports:dotenv``."""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Report:
    image: str
    image_id: str
    digest: str
    tags: tuple[str, ...]
    layer_size: int | None

    def lines(self) -> list[str]:
        return [
            f"LWC_IMAGE={self.image}",
            f"LWC_IMAGE_ID={self.image_id}",
            f"LWC_IMAGE_DIGEST={self.digest}",
            f"LWC_TAGS={','.join(self.tags)}",
            f"LWC_LAYER_SIZE={'' if self.layer_size is None else self.layer_size}",
        ]

    def write(self, path: Path) -> None:
        write_safely(path, "\n".join(self.lines()) + "\n")


def write_safely(path: Path, text: str) -> None:
    """The one writer of the report: the build can write to its directory, so write a random
    temporary name there (``mkstemp``, never following a planted link) and rename it into
    place; a symlink at the report's own path is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise ConfigError("LWC_REPORT", f"{path} is a symbolic link; refusing to write through "
                                        "it (the build may have planted it)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remember_container(path: Path, container: str) -> None:
    """After 'lwcontainer build': the report names the kept container for 'commit'."""
    lines = [f"{k}={v}" for k, v in read(path).items() if k != "LWC_BUILD_CONTAINER"]
    write_safely(path, "\n".join([*lines, f"LWC_BUILD_CONTAINER={container}"]) + "\n")


def read(path: Path) -> dict[str, str]:
    """A previous report's values (for ``lwcontainer push`` and ``commit``), empty if none."""
    if not path.is_file() or path.is_symlink():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values
