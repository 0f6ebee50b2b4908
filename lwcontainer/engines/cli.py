"""The seam between engines that drive a container CLI: the ``EngineCli`` value.

Every engine that runs a command-line client (docker, podman) builds one ``EngineCli`` for the
run: which program, where the engine is (the address variables its steps need), where the
run's private login lives and how the program is told so, and how its output differs. Nothing
above ``engines/`` names a program: a step's program always comes from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class EngineCli:
    program: str  # the command on PATH: "docker", "podman"
    title: str  # how messages name the engine: "Docker engine", "podman"
    #: variables that say where the engine is (docker: DOCKER_HOST and the TLS variables); the
    #: engine's own configuration variables (CONTAINERS_CONF, …) stay the user's environment's
    address: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""  # why that address
    #: the run's private credentials (a directory or a file), or None: the user's own
    auth: str | None = None
    #: how the program is told: a variable naming ``auth`` (docker: DOCKER_CONFIG) …
    auth_variable: str = ""
    #: … or an option of login, pull and push (podman: --authfile)
    auth_option: str = ""
    #: how "no such container" reads in its error output (lower case)
    missing_container: str = "no such container"
    #: how ``ps --format`` reads one label (docker: ``.Label``; podman: ``index .Labels``)
    label_format: str = '{{.Label "%s"}}'
    #: how ``ps --format`` reads a container's state as one word (``created``, ``running``, …):
    #: docker's ``.State``; podman's ``.State`` is the status text ("Up 1 second ago")
    state_format: str = "{{.State}}"
    #: more options of ``rm --force`` (podman: ``--time 0``: it would stop the container first
    #: and wait its stop timeout, 10 s, for a PID 1 that ignores SIGTERM; docker kills at once)
    remove_options: tuple[str, ...] = ()

    @staticmethod
    def image_id(output: str) -> str:
        """An image id as the report gives it, ``sha256:<hex>`` (podman prints the bare hex)."""
        lines = output.strip().splitlines()
        text = lines[-1].strip() if lines else ""
        return text if not text or text.startswith("sha256:") else f"sha256:{text}"

    def variables(self, private: bool = True) -> dict[str, str]:
        """What every step adds to the run's environment: the address and, for a private login
        named by a variable, that variable."""
        auth = {self.auth_variable: self.auth} if private and self.auth and self.auth_variable \
            else {}
        return {**self.address, **auth}

    def auth_args(self, private: bool = True) -> tuple[str, ...]:
        """The option naming the private login, for login, pull and push."""
        if private and self.auth and self.auth_option:
            return (self.auth_option, self.auth)
        return ()
