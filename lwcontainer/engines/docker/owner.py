"""Who made a container: build and lease containers carry an owner label (host, pid, the
process's start time), so that one a killed run left behind can be told from another run's.

A run removes the containers whose owner is gone (its process no longer exists, or the pid now
belongs to a process started later), on its own host only: a container made from another host
(another CI job's container on a shared engine) cannot be judged from here and counts as live.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache

from . import commands
from .client import DockerCli
from ...executor import last_line
from ...output.logs import get_logger


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str  # field 22 of /proc/<pid>/stat: clock ticks after boot

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.rsplit("/", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        host, pid, start = parts
        return cls(host, int(pid), start)

    def alive(self) -> bool:
        """Is the process that made it still running? True for another host's (unknowable)."""
        if self.host != this_host():
            return True
        return start_time(self.pid) == self.start


def this_host() -> str:
    return socket.gethostname()


def start_time(pid: int) -> str | None:
    """The process's start time from /proc/<pid>/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


@cache
def this_process() -> Owner:
    pid = os.getpid()
    return Owner(this_host(), pid, start_time(pid) or "0")


def labels(keep: bool = False) -> commands.Argv:
    """The labels of a build or lease container this process makes."""
    return commands.owner_labels(str(this_process()), keep)


@dataclass(frozen=True)
class Listed:
    """A build or lease container as ``docker ps`` lists it (commands.build_containers)."""

    id: str
    name: str
    state: str
    owner: str
    kept: bool

    @classmethod
    def parse(cls, line: str) -> Listed | None:
        fields = line.split("\t")
        if len(fields) != len(commands.BUILD_FIELDS) or not fields[0]:
            return None
        return cls(fields[0], fields[1], fields[2].lower(), fields[3], fields[4] == "1")

    @property
    def in_use(self) -> bool:
        return self.state in ("created", "running")

    @property
    def orphan(self) -> bool:
        """Its owner is gone (same host only; no owner label: made by an older lwcontainer, not
        judged). A kept build container is one only while unfinished: its run was killed."""
        owner = Owner.parse(self.owner)
        if owner is None or owner.alive():
            return False
        return not self.kept or self.in_use


def remove_orphans(docker: DockerCli) -> list[Listed]:
    """Remove the build and lease containers whose run is gone; return the others in use
    (created or running): the builds that use a shared automounter."""
    done = docker.run(commands.build_containers(docker.cli.label_format, docker.cli.state_format),
                      check=False)
    if not done.ok:
        return []
    listed = [c for c in map(Listed.parse, done.stdout.splitlines()) if c is not None]
    log = get_logger()
    for container in (c for c in listed if c.orphan):
        removed = docker.remove(container.id, check=False)
        if removed.ok:
            log.warning("orphan_removed", container=container.name, state=container.state,
                        owner=container.owner, reason="the run that made it is gone")
        elif docker.cli.missing_container not in removed.stderr.lower():
            log.warning("orphan_not_removed", container=container.name,
                        error=docker.executor.masker(last_line(removed.stderr)))
    return [c for c in listed if c.in_use and not c.orphan]
