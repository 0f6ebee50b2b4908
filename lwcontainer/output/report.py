"""The dotenv report a GitLab job can publish with ``artifacts:reports:dotenv``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .files import write_below
from .logs import get_logger


@dataclass(frozen=True)
class Report:
    image: str
    image_id: str
    digest: str
    tags: tuple[str, ...]
    layer_size: int | None
    details: tuple[tuple[str, str], ...] = ()  # the engine's own keys (how CVMFS was mounted)
    prefix: str = ""  # LWC_REPORT_PREFIX: one per image of a matrix

    def lines(self) -> list[str]:
        values = [
            ("LWC_IMAGE", self.image),
            ("LWC_IMAGE_ID", self.image_id),
            ("LWC_IMAGE_DIGEST", self.digest),
            ("LWC_TAGS", ",".join(self.tags)),
            ("LWC_LAYER_SIZE", "" if self.layer_size is None else str(self.layer_size)),
            *self.details,
        ]
        return [f"{self.prefix}{key}={value}" for key, value in values]

    def write(self, path: Path, root: Path | None = None) -> None:
        text = "\n".join(self.lines()) + "\n"
        check_gitlab_limits(path, text)
        write_safely(path, text, root)


#: GitLab's limits for an artifacts:reports:dotenv file (gitlab.com and default self-managed):
#: fewer than 5 KiB ("must be less than 5 kilobytes") and at most 20 variables.
GITLAB_MAX_BYTES = 5 * 1024
GITLAB_MAX_VARIABLES = 20


def check_gitlab_limits(path: Path, text: str) -> None:
    """GitLab drops a dotenv report over its limits (the whole artifact fails): say so here."""
    lines = [line for line in text.splitlines() if line]
    if len(text.encode()) >= GITLAB_MAX_BYTES or len(lines) > GITLAB_MAX_VARIABLES:
        get_logger().warning("report_over_gitlab_limits", path=str(path),
                             bytes=len(text.encode()), variables=len(lines),
                             limits=f"under {GITLAB_MAX_BYTES} bytes, "
                                    f"{GITLAB_MAX_VARIABLES} variables",
                             hint="fewer LWC_EXTRA_TAGS, or shorter ones")


def write_safely(path: Path, text: str, root: Path | None = None) -> None:
    """The one writer of the report: the build can write the checkout, so no directory below
    ``root`` (the project directory) may be a link, and the file goes to a random temporary
    name and is renamed into place: a symlink at the report's own path is replaced, never
    followed (output/files.py)."""
    if write_below(root or path.parent, path, text, "LWC_REPORT"):
        get_logger().warning("report_link_replaced", path=str(path),
                             reason="a symbolic link stood at the report's path")


def remember_container(path: Path, container: str, prefix: str = "",
                       root: Path | None = None) -> None:
    """After 'lwcontainer build': the report names the kept container for 'commit'."""
    lines = [f"{prefix}{k}={v}" for k, v in read(path, prefix).items()
             if k != "LWC_BUILD_CONTAINER"]
    write_safely(path, "\n".join([*lines, f"{prefix}LWC_BUILD_CONTAINER={container}"]) + "\n",
                 root)


#: What a value read back from a report must look like before it goes into a docker argv.
_READ_BACK = {
    "LWC_IMAGE_ID": re.compile(r"sha256:[0-9a-f]{64}"),
    "LWC_BUILD_CONTAINER": re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}"),
    "LWC_LAYER_SIZE": re.compile(r"[0-9]{0,20}"),
}


def read(path: Path, prefix: str = "") -> dict[str, str]:
    """A previous report's values (for ``lwcontainer push``, ``commit`` and ``run``), empty if
    none. The build could have rewritten it: a value that goes into a docker argv is refused
    unless it has its expected form."""
    if not path.is_file() or path.is_symlink():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key.startswith(prefix):
            values[key[len(prefix):]] = value.strip()
    for key, form in _READ_BACK.items():
        if key in values and not form.fullmatch(values[key]):
            raise ConfigError(key, f"{values[key]!r} read from {path} is not a valid value")
    return values
