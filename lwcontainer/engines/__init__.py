"""Engines: the ways an image gets built and published. One interface, one factory.

An engine is made for one run, with the run's settings, executor and stage log. The
orchestration (``lwcontainer.pipeline``) calls it in this order:

- ``connect()``: a context for the whole run: reach what the engine needs (docker: the engine
  and a private login; inplace: nothing) and let go of it at the end;
- ``workspace()``: a context holding what the build needs (docker: CVMFS and the build
  container); its exit may overlap ``publish``;
- ``build()`` then ``commit()`` (an ``Image``); ``measure(image)`` adds the layer size;
- ``publish(image)``: every tag to the registry; returns ``repository@digest`` or "";
- ``built()``: an image an earlier run built, for ``lwcontainer push``/``publish``.

The single-stage subcommands (``login``, ``automount``, ``build``, ``commit``, ``run``) are
compositions of the docker engine's stages in ``engines/docker/subcommands.py``; an engine that
has them says so in ``SUBCOMMANDS`` (docker, and podman, which reuses docker's stages).

An engine that drives a container CLI builds an ``EngineCli`` value (``engines/cli.py``): the
program, its address variables, its private login and its output differences. It is a folder:
``engines/docker/``, ``engines/podman/`` (docker's stages, overridden where podman's CLI
differs), ``engines/inplace/`` (no CLI: the registry API).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ContextManager, Mapping, Protocol

from ..config.settings import DOCKER, INPLACE, PODMAN
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..executor import Executor
    from ..stages import Image, Stages


class Engine(Protocol):
    SUBCOMMANDS: frozenset[str]

    def connect(self) -> ContextManager[None]: ...

    def workspace(self) -> ContextManager[None]: ...

    def build(self) -> None: ...

    def commit(self) -> Image: ...

    def measure(self, image: Image) -> Image: ...

    def publish(self, image: Image) -> str: ...

    def built(self) -> Image: ...


#: LWC_ENGINE -> the class implementing it (config.settings.ENGINE_NAMES lists the names).
IMPLEMENTATIONS = {
    DOCKER: "lwcontainer.engines.docker.engine:DockerEngine",
    PODMAN: "lwcontainer.engines.podman.engine:PodmanEngine",
    INPLACE: "lwcontainer.engines.inplace.engine:InplaceEngine",
}


def make_engine(settings: Settings, executor: Executor, stages: Stages,
                environ: Mapping[str, str], subcommand: str = "") -> Engine:
    """The one place that maps LWC_ENGINE to an implementation; ``subcommand`` names a
    single-stage subcommand the engine must have."""
    module, _, name = IMPLEMENTATIONS[settings.engine].partition(":")
    implementation = getattr(importlib.import_module(module), name)
    if subcommand and subcommand not in implementation.SUBCOMMANDS:
        raise ConfigError("LWC_ENGINE", f"'lwcontainer {subcommand}' runs one stage of an "
                                        f"engine with a CLI (docker, podman); with "
                                        f"LWC_ENGINE={settings.engine} run 'lwcontainer' or "
                                        "'lwcontainer publish'")
    return implementation(settings, executor, stages, environ)
