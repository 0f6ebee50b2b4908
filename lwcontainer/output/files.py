"""Writing a file in the checkout, which the build (or the checkout itself) may have filled with
symbolic links: the one writer of the report and of ``lwcontainer init``'s files.

Every directory from the root down is opened with ``O_NOFOLLOW`` (and made when missing), so no
link below the root is followed; the text goes to a random temporary name in the last one and
is renamed over whatever stands at the file's name: a link there is replaced, never written
through.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from ..errors import ConfigError

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def below(root: Path, path: Path, setting: str) -> tuple[str, ...]:
    """The components of ``path`` below ``root``; a ConfigError if it lies elsewhere."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ()
    if not parts or ".." in parts:
        raise ConfigError(setting, f"{path} must lie inside the project directory {root}")
    return parts


def write_below(root: Path, path: Path, text: str, setting: str,
                mode: int | None = None) -> bool:
    """Write ``text`` to ``path`` (below ``root``) through no link; ``mode`` exactly, else the
    umask's. Returns True when a link stood at the file's name (it is replaced)."""
    parts = below(root, path, setting)
    try:
        fd = os.open(root, _DIRECTORY)
    except OSError as exc:
        raise ConfigError(setting, f"cannot write {path}: {exc}") from None
    try:
        for depth, part in enumerate(parts[:-1], 1):
            inner = _enter(fd, part, root.joinpath(*parts[:depth]), setting)
            os.close(fd)
            fd = inner
        return _replace(fd, parts[-1], path, text, setting, mode)
    finally:
        os.close(fd)


def _enter(fd: int, name: str, where: Path, setting: str) -> int:
    """Open (after making it, if missing) the directory ``name`` in ``fd``."""
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=fd)
        if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
            raise ConfigError(setting, f"{where} is a symbolic link; lwcontainer does not write "
                                       "through links in the checkout: remove it")
        return os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as exc:
        raise ConfigError(setting, f"cannot write below {where}: {exc}") from None


def _replace(fd: int, name: str, path: Path, text: str, setting: str, mode: int | None) -> bool:
    try:
        linked = stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
    except FileNotFoundError:
        linked = False
    except OSError as exc:
        raise ConfigError(setting, f"cannot write {path}: {exc}") from None
    temporary = f".{name}.{secrets.token_hex(6)}"
    try:
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                      0o666 if mode is None else 0o600, dir_fd=fd)
    except OSError as exc:
        raise ConfigError(setting, f"cannot write {path}: {exc}") from None
    try:
        with os.fdopen(out, "w", encoding="utf-8") as file:
            file.write(text)
            if mode is not None:
                os.fchmod(file.fileno(), mode)
        os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=fd)
        if isinstance(exc, OSError):
            raise ConfigError(setting, f"cannot write {path}: {exc}") from None
        raise
    return linked
