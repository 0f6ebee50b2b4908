"""The docker CLI as this run calls it: every step gets the run's own complete environment (the
engine's address and TLS variables, the run's private docker config, no password variables)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ...executor import Completed, Executor, Step


@dataclass(frozen=True)
class DockerCli:
    executor: Executor
    env: Mapping[str, str]

    def step(self, argv: tuple[str, ...], **options: object) -> Step:
        return Step(argv, env=self.env, **options)

    def run(self, argv: tuple[str, ...], **options: object) -> Completed:
        return self.executor.run(self.step(argv, **options))
