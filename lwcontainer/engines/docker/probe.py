"""Is there a Docker engine for this user? Asked once, briefly, when LWC_ENGINE is unset on a
workstation (engines/choice.py decides from the answer)."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, NamedTuple

from .address import DEFAULT_ADDRESS, locate
from ...config.settings import Settings
from ...executor import Executor, Step, child_environment, last_line

PROGRAM = "docker"
PODMAN = "podman"  # the program a docker command may really be
PROBE_TIMEOUT_S = 10.0  # an engine that answers at all answers within this

#: what the probe found
ANSWERS = "answers"  # a Docker engine answered
IS_PODMAN = "is-podman"  # the docker command is podman (podman-docker, or a shim)
DENIED = "denied"  # the engine's socket refuses this user
SILENT = "silent"  # no engine answered (not running, nowhere)
ABSENT = "absent"  # no docker command


class Found(NamedTuple):
    what: str  # one of the above
    detail: str  # for the log
    version: str = ""  # the engine's, when it answers


def probe(settings: Settings, executor: Executor, environ: Mapping[str, str]) -> Found:
    found = shutil.which(PROGRAM, path=environ.get("PATH"))
    if found is None:
        return Found(ABSENT, "no docker command on PATH")
    real = os.path.realpath(found)
    if os.path.basename(real).startswith(PODMAN):  # a link to podman says "docker version …"
        return Found(IS_PODMAN, f"{found} is a link to {real}")
    address = locate(settings, environ, settings.local_socket)
    env = child_environment(environ, address.env, settings.secret_variables)
    timeout = min(settings.docker_timeout, PROBE_TIMEOUT_S) or PROBE_TIMEOUT_S
    # both at once: whether an engine answers, and the client's name (which alone decides
    # when it is podman's: its answer is then not waited for)
    beside = ThreadPoolExecutor(1, "lwc-probe")
    try:
        answer = beside.submit(executor.run, Step(
            ("version", "--format", "{{.Server.Version}}"), program=PROGRAM, env=env,
            timeout=timeout, check=False, what="docker version"))
        client = executor.run(Step(("--version",), program=PROGRAM, env=env, timeout=timeout,
                                   check=False, what="docker --version"))
        if PODMAN in client.stdout.lower():  # a script that execs podman, podman-docker
            return Found(IS_PODMAN, f"'docker --version' says {client.stdout.strip()!r}")
        done = answer.result()
    finally:
        beside.shutdown(wait=False)
    where = address.address or DEFAULT_ADDRESS
    if done.ok:
        version = done.stdout.strip()
        # the run's own steps reach the same engine (its private config carries the user's
        # context, dockerconfig.py): wait-daemon need not ask it again
        return Found(ANSWERS, f"a Docker engine answers at {where} (version {version})",
                     version)
    said = executor.masker(last_line(done.stderr))
    if "permission denied" in done.stderr.lower():
        return Found(DENIED, f"the Docker engine at {where} refuses this user: {said}")
    return Found(SILENT, f"no Docker engine answers at {where}: {said}")
