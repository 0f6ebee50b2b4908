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

Docker-only subcommands (``login``, ``automount``, ``build``, ``commit``, ``run``) are
compositions of the docker engine's stages in ``engines/docker/subcommands.py``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ContextManager, Mapping, Protocol

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..executor import Executor
    from ..stages import Image, Stages


class Engine(Protocol):
    def connect(self) -> ContextManager[None]: ...

    def workspace(self) -> ContextManager[None]: ...

    def build(self) -> None: ...

    def commit(self) -> Image: ...

    def measure(self, image: Image) -> Image: ...

    def publish(self, image: Image) -> str: ...

    def built(self) -> Image: ...


#: LWC_ENGINE -> the class implementing it.
IMPLEMENTATIONS = {
    "docker": "lwcontainer.engines.docker.engine:DockerEngine",
    "inplace": "lwcontainer.engines.inplace.engine:InplaceEngine",
}


def make_engine(settings: Settings, executor: Executor, stages: Stages,
                environ: Mapping[str, str]) -> Engine:
    """The one place that maps LWC_ENGINE to an implementation."""
    module, _, name = IMPLEMENTATIONS[settings.engine].partition(":")
    return getattr(importlib.import_module(module), name)(settings, executor, stages, environ)
