"""Which engine a run uses when LWC_ENGINE is unset (or ``auto``). Highest first:

1. LWC_ENGINE given: that engine, always;
2. ``lwcontainer publish`` with a captured layer in the checkout that git does not track
   (``init`` ignores it): the in-place engine. A layer that is committed never chooses: the
   checkout must not pick the engine; nor does ``push`` (what a docker or podman run says to
   try again with: its build script could have left a layer file in the checkout);
3. a CI job: docker (the dind service);
4. a dry run: docker, without asking anything;
5. the workstation: docker when a Docker engine answers; else podman when it is installed (a
   ``docker`` command that is really podman counts as podman). A Docker socket that refuses
   the user decides at once: podman, or exit 3 saying what to do.

The choice and its reason are logged (``engine_chosen``).
"""
from __future__ import annotations

import importlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from . import IMPLEMENTATIONS
from .docker import probe as docker_probe
from .inplace.artifact import LAYER_FILE
from ..config import git
from ..config.settings import AUTO_ENGINE, DOCKER, INPLACE, PODMAN, Settings
from ..errors import EngineError
from ..executor import Executor
from ..output.logs import get_logger


def choose_engine(settings: Settings, executor: Executor, environ: Mapping[str, str],
                  publishes: bool = False) -> Settings:
    """``settings`` with LWC_ENGINE decided (unchanged when it was given)."""
    if settings.engine != AUTO_ENGINE:
        return settings
    engine, reason, answered = decide(settings, executor, environ, publishes)
    get_logger().info("engine_chosen", engine=engine, reason=reason)
    return replace(settings, engine=engine, engine_answered=answered)


def decide(settings: Settings, executor: Executor, environ: Mapping[str, str],
           publishes: bool) -> tuple[str, str, str]:
    """(engine, why, the Docker engine's version if the probe just heard it answer)."""
    if publishes:
        untracked, why = untracked_layer(settings.project_dir, environ,
                                         settings.secret_variables)
        if untracked:
            return INPLACE, why, ""
        if why:
            get_logger().info("layer_not_choosing", reason=why)
    if environ.get("CI") or environ.get("GITLAB_CI") or settings.ci_style:
        return DOCKER, "a CI job (LWC_ENGINE unset): docker, the dind service", ""
    if executor.dry_run:
        return DOCKER, "a dry run asks no engine (LWC_ENGINE unset): docker planned", ""
    return workstation(settings, executor, environ)


def workstation(settings: Settings, executor: Executor,
                environ: Mapping[str, str]) -> tuple[str, str, str]:
    podman = shutil.which(PODMAN, path=environ.get("PATH")) is not None
    beside = ThreadPoolExecutor(1, "lwc-choice")
    try:  # while docker answers, the docker engine's modules load (podman's reuses them)
        probing = beside.submit(docker_probe.probe, settings, executor, environ)
        importlib.import_module(IMPLEMENTATIONS[DOCKER].partition(":")[0])
        found = probing.result()
    finally:
        beside.shutdown(wait=False)
    if found.what == docker_probe.ANSWERS:
        return DOCKER, found.detail, found.version
    if found.what == docker_probe.IS_PODMAN:
        return PODMAN, f"the docker command is podman: {found.detail}", ""
    if found.what == docker_probe.DENIED:
        if podman:
            return PODMAN, f"{found.detail}; podman is installed", ""
        raise EngineError(f"{found.detail}: add yourself to the docker group, or install podman "
                          "(then LWC_ENGINE=podman, or leave LWC_ENGINE unset)")
    if podman:
        return PODMAN, f"{found.detail}; podman is installed", ""
    return DOCKER, f"{found.detail}; podman is not installed either", ""


def untracked_layer(project_dir: Path, environ: Mapping[str, str],
                    hide: Iterable[str] = ()) -> tuple[bool, str]:
    """(does a captured layer lie in the checkout, untracked by git?, why). Only a clear answer
    counts: a layer git tracks, or a checkout git cannot read, never chooses. ``hide``: the
    user's secret variables, which git does not get."""
    layer = project_dir / LAYER_FILE
    if layer.is_symlink() or not layer.is_file():
        return False, ""
    rc, _ = git.run(project_dir, environ, "ls-files", "--error-unmatch", "--", LAYER_FILE,
                    hide=hide)
    untracked = (f"a captured layer {layer} that git does not track: 'publish' with the "
                 "in-place engine (LWC_ENGINE unset)")
    if rc == 0:
        return False, f"{layer} is committed to the checkout: it does not choose the engine"
    if rc == 1:
        return True, untracked
    if not (project_dir / ".git").exists() and rc in (127, 128):  # no checkout: not committed
        return True, untracked
    return False, f"{layer} found, but git cannot tell whether it is committed (exit {rc})"
