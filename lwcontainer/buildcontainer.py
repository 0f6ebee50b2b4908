"""The build container: the recipe's ``docker run``, as a context manager."""
from __future__ import annotations

import secrets

from structlog.contextvars import bound_contextvars

from . import commands, signals
from .errors import BuildError
from .executor import Executor, Step, last_line
from .logs import get_logger
from .settings import Settings, slug


class BuildContainer:
    """The build container: created under a unique name on enter (or an existing one adopted),
    always removed on exit, unless kept after success for a later 'commit'."""

    def __init__(self, settings: Settings, executor: Executor, volume: commands.Argv = (),
                 keep: bool = False, existing: str | None = None) -> None:
        self.x = executor
        self.settings = settings
        self.volume = volume
        self.keep = keep
        self.existing = existing
        job = slug(settings.job_id) if settings.job_id else "local"
        self.name = existing or (f"lwc-{slug(settings.project_name)[:40]}-{job}-"
                                 f"{secrets.token_hex(4)}")
        self.log = get_logger()

    def __enter__(self) -> str:
        if not self.existing:
            self.x.run(Step(commands.build_create(self.settings, self.name, self.volume),
                            error=BuildError, what="build container create"))
        return self.name

    def __exit__(self, *exc_info: object) -> None:
        if self.keep and exc_info[0] is None:
            self.log.info("build_container_kept", container=self.name)
            return
        with signals.deferred(), bound_contextvars(stage="cleanup"):
            removed = self.x.run(Step(commands.remove(self.name), check=False))
            if removed.ok:
                self.log.info("build_container_removed", container=self.name)
            elif "No such container" not in removed.stderr:
                self.log.warning("build_container_not_removed", container=self.name,
                                 error=self.x.masker(last_line(removed.stderr)))
