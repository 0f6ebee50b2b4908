"""Pure argv builders for the podman commands that differ from docker's (without the leading
``podman``); every other command is docker's (engines/docker/commands.py): the CLIs agree."""
from __future__ import annotations

from typing import Iterable

from ..docker.commands import Argv

#: Podman adds these to every container's environment unless told not to; a commit would keep
#: them in the image, which the base did not have (docker adds neither).
ADDED_VARIABLES = ("TERM", "container")
#: The image format of the commit. Docker's (v2s2), not OCI: OCI's image config has no
#: HEALTHCHECK, ONBUILD or SHELL, so an OCI commit would silently drop a base's HEALTHCHECK and
#: ONBUILD. With docker's format the image is the docker engine's, field for field.
IMAGE_FORMAT = "docker"
TLS_OFF = "--tls-verify=false"
#: How podman's ``ps --format`` reads a label (docker's ``.Label`` function is not there).
LABEL_FORMAT = '{{index .Labels "%s"}}'
#: How podman's ``ps --format`` reads the state as one word ("running"): its ``.State`` (and
#: ``.Status``) is the status text ("Up 1 second ago", "Exited (0) …"); the plain word is the
#: listed container's own field, behind it.
STATE_FORMAT = "{{.ListContainer.State}}"
#: ``rm --force`` without a stop first: podman would send SIGTERM and wait 10 s (a build's
#: /bin/bash as PID 1 ignores it); docker's ``rm --force`` kills at once.
REMOVE_OPTIONS = ("--time", "0")


def check() -> Argv:
    """Podman needs no daemon: this asks it to open its storage and say whether it runs
    rootless ("true"/"false"); it fails at once on a broken containers.conf/storage.conf."""
    return ("info", "--format", "{{.Host.Security.Rootless}}")


def tls(insecure: bool) -> Argv:
    return (TLS_OFF,) if insecure else ()


def login(registry: str, user: str, auth: Argv, insecure: bool) -> Argv:
    return ("login", *auth, *tls(insecure), "--username", user, "--password-stdin", registry)


def pull(ref: str, auth: Argv, insecure: bool) -> Argv:
    return ("pull", "--quiet", *auth, *tls(insecure), ref)


def push(ref: str, auth: Argv, insecure: bool, digest_file: str | None) -> Argv:
    """``--digestfile``: podman writes the pushed manifest's digest there (docker's RepoDigests
    is not how podman reports it)."""
    digest = ("--digestfile", digest_file) if digest_file else ()
    return ("push", *auth, *tls(insecure), *digest, ref)


def commit(name: str, changes: Iterable[str], target: str) -> Argv:
    return ("commit", "--format", IMAGE_FORMAT,
            *(arg for change in changes for arg in ("--change", change)), name, target)


def unset_added(base_env: Iterable[str] | None) -> Argv:
    """``--unsetenv`` for each variable podman would add that the base does not set itself."""
    own = {entry.partition("=")[0] for entry in base_env or ()}
    return tuple(arg for name in ADDED_VARIABLES if name not in own
                 for arg in ("--unsetenv", name))
