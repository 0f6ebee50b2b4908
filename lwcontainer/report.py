"""The dotenv report a GitLab job can publish with ``artifacts:reports:dotenv``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("\n".join(self.lines()) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def read(path: Path) -> dict[str, str]:
    """A previous report's values (for ``lwcontainer push`` and ``commit``), empty if none."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values
