"""The build container: the recipe's ``docker run`` (create, then start), as a context manager."""
from __future__ import annotations

import secrets
from pathlib import Path

from structlog.contextvars import bound_contextvars

from . import commands, owner
from ... import signals
from ...errors import BuildError, ConfigError
from ...executor import last_line
from .client import DockerCli
from ...output.logs import get_logger
from ...config.settings import Settings, slug


class BuildContainer:
    """The build container: created under a unique name on enter (or an existing one adopted),
    always removed on exit, unless kept after success for a later 'commit'."""

    def __init__(self, settings: Settings, docker: DockerCli, volume: commands.Argv = (),
                 keep: bool = False, existing: str | None = None,
                 options: commands.Argv = (), cvmfs_wait: int | None = None) -> None:
        self.docker = docker
        self.options = options
        self.x = docker.executor
        self.settings = settings
        self.volume = volume
        self.keep = keep
        self.existing = existing
        self.cvmfs_wait = cvmfs_wait  # seconds its first step waits for CVMFS; None: no check
        self.removed = False
        job = slug(settings.job_id) if settings.job_id else "local"
        self.name = existing or (f"lwc-{slug(settings.project_name)[:40]}-{job}-"
                                 f"{secrets.token_hex(4)}")
        self.log = get_logger()

    def create_argv(self) -> commands.Argv:
        return commands.build_create(self.settings, self.name, self.volume,
                                     git=checkout_git(self.settings.project_dir),
                                     labels=owner.labels(keep=self.keep),
                                     options=self.options, cvmfs_wait=self.cvmfs_wait)

    def __enter__(self) -> str:
        if not self.existing:
            argv = self.create_argv()
            try:
                self.docker.run(argv, error=BuildError, what="build container create")
            except BaseException:  # a signal may land after docker created it: remove by name
                with signals.deferred():
                    self.docker.remove(self.name, check=False)
                raise
        return self.name

    def __exit__(self, *exc_info: object) -> None:
        if self.keep and exc_info[0] is None:
            self.log.info("build_container_kept", container=self.name)
            return
        self.remove()

    def remove(self) -> None:
        """Remove it now (once): on exit, or earlier, once it has served (committed, its layer
        read)."""
        if self.removed:
            return
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            removed = self.docker.remove(self.name, check=False)
            if removed.ok:
                self.removed = True
                self.log.info("build_container_removed", container=self.name)
            elif self.docker.cli.missing_container in removed.stderr.lower():
                self.removed = True
            else:  # the exit tries again
                self.log.warning("build_container_not_removed", container=self.name,
                                 error=self.x.masker(last_line(removed.stderr)))


def checkout_git(project: Path) -> bool:
    """Has the checkout a ``.git`` (a directory, or a worktree's file) to mount read-only? A
    link there is refused: docker would mount whatever host path the checkout names."""
    path = project / ".git"
    if path.is_symlink():
        raise ConfigError("LWC_PROJECT_DIR", f"{path} is a symbolic link; the build mounts the "
                                             "checkout's .git read-only and will not follow a "
                                             "link to a host path: make .git a directory")
    return path.exists()
