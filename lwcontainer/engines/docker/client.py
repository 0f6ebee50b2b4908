"""A container CLI as this run calls it: every step gets the program of the engine's
``EngineCli`` and the run's own complete environment (the engine's address and TLS variables,
the run's private login, no password variables)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from . import commands
from ..cli import EngineCli
from ...executor import Completed, Executor, Step

#: kind of call -> the setting that limits it
TIMEOUT_SETTINGS = {"engine": "LWC_DOCKER_TIMEOUT", "transfer": "LWC_TRANSFER_TIMEOUT",
                    "build": "LWC_BUILD_TIMEOUT", "probe": "LWC_CVMFS_TIMEOUT"}


@dataclass(frozen=True)
class DockerCli:
    """Steps of one CLI that speaks docker's command language (docker itself, podman)."""

    executor: Executor
    cli: EngineCli
    env: Mapping[str, str]
    #: kind of call (commands.timeout_kind) -> seconds, or None for no limit
    timeouts: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def program(self) -> str:
        return self.cli.program

    def step(self, argv: tuple[str, ...], **options: object) -> Step:
        if "timeout" not in options:
            kind = commands.timeout_kind(argv)
            options["timeout"] = self.timeouts.get(kind)
            options.setdefault("timeout_setting", TIMEOUT_SETTINGS.get(kind, ""))
        options.setdefault("what", f"{self.cli.program} {argv[0]}" if argv else self.cli.program)
        return Step(argv, program=self.cli.program, env=self.env, **options)

    def run(self, argv: tuple[str, ...], **options: object) -> Completed:
        return self.executor.run(self.step(argv, **options))

    def remove(self, name: str, **options: object) -> Completed:
        """Remove a container (running or not) as this CLI does it at once; a CLI too old for
        those options (podman before 4.0 has no ``rm --time``) removes it as it can."""
        done = self.run(commands.remove(name, self.cli.remove_options), **options)
        if self.cli.remove_options and not done.ok and "unknown flag" in done.stderr:
            done = self.run(commands.remove(name), **options)
        return done
