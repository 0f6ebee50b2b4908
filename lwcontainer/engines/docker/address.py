"""Where the Docker engine is: DOCKER_HOST as given, or the docker-in-docker service of a CI job."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ...config.settings import Settings

#: The variables of the process environment that say where the engine is (with the settings
#: LWC_DIND_HOST and DOCKER_TLS_CERTDIR).
ADDRESS_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "CI", "GITLAB_CI",
                     "KUBERNETES_PORT")

@dataclass(frozen=True)
class EngineAddress:
    """Variables for the docker CLI, and why."""

    env: dict[str, str]
    reason: str

    @property
    def address(self) -> str | None:
        return self.env.get("DOCKER_HOST")

    @property
    def cert_path(self) -> str | None:
        return self.env.get("DOCKER_CERT_PATH")


#: where the docker CLI goes when no address variable is set
DEFAULT_ADDRESS = "the docker CLI's default (its current context, else /var/run/docker.sock)"

def engine(env: Mapping[str, str], local_socket: bool) -> EngineAddress:
    """Where the engine is. A DOCKER_HOST the user set is never overridden (only completed with
    the TLS variables when it names port 2376 and DOCKER_TLS_CERTDIR is set, as the docker
    image's entrypoint does). In a CI job with no local socket: the dind service, with TLS when
    DOCKER_TLS_CERTDIR is set; on a Kubernetes executor it shares the pod's network."""
    host = env.get("DOCKER_HOST")
    certdir = env.get("DOCKER_TLS_CERTDIR")
    tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": f"{certdir}/client"} if certdir else {}
    if host:
        if host.rstrip("/").endswith(":2376") and certdir and not env.get("DOCKER_TLS_VERIFY"):
            return EngineAddress({"DOCKER_HOST": host, **tls},
                          "DOCKER_HOST names port 2376 and DOCKER_TLS_CERTDIR is set: TLS")
        return EngineAddress({"DOCKER_HOST": host}, "DOCKER_HOST is set")
    if not (env.get("CI") or env.get("GITLAB_CI")):
        return EngineAddress({}, "DOCKER_HOST unset, not a CI job: the docker CLI's default")
    if local_socket:
        return EngineAddress({}, "the local engine socket")
    kubernetes = bool(env.get("KUBERNETES_PORT"))
    name = env.get("LWC_DIND_HOST") or ("localhost" if kubernetes else "docker")
    where = "the Kubernetes pod's dind service" if kubernetes else "the dind service"
    if certdir:
        return EngineAddress({"DOCKER_HOST": f"tcp://{name}:2376", **tls},
                      f"{where}, TLS (DOCKER_TLS_CERTDIR={certdir})")
    return EngineAddress({"DOCKER_HOST": f"tcp://{name}:2375"}, f"{where}, TLS disabled")


def locate(settings: Settings, environ: Mapping[str, str], local_socket: Path) -> EngineAddress:
    """The engine of this run: the address variables of the process environment completed by
    the settings LWC_DIND_HOST and DOCKER_TLS_CERTDIR."""
    given = {name: environ[name] for name in ADDRESS_VARIABLES if environ.get(name)}
    chosen = {"LWC_DIND_HOST": settings.dind_host,
              "DOCKER_TLS_CERTDIR": settings.docker_tls_certdir}
    return engine({**given, **{k: v for k, v in chosen.items() if v}},
                  local_socket=local_socket.exists())
