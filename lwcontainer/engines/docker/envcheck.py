"""What a commit would keep of the build container's environment. ``docker commit`` (and
podman's) writes the container's Env into the image: the base's, the LWC_BUILD_ENV variables,
and what the engine passes into every container (docker: the ``proxies`` of the docker config;
podman: the host's proxy variables, containers.conf ``http_proxy``). A value the run added that
carries credentials (``scheme://user:password@`` in a URL, or a secret lwcontainer masks) must
not reach a registry inside an image: the commit is refused before it is made."""
from __future__ import annotations

import re
from typing import Callable, Iterable

from ...errors import ConfigError

#: user:password@ in a URL (a proxy's, a repository's); a user alone carries no credential
CREDENTIALS_IN_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:[^/?#@\s]+@")
PROXIES = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")


def carrying_credentials(env: Iterable[str], base_env: Iterable[str],
                         masker: Callable[[str], str]) -> list[str]:
    """The names of the entries of ``env`` (``NAME=value``) not in ``base_env`` whose value
    carries credentials."""
    inherited = set(base_env)
    found = []
    for entry in env:
        if entry in inherited:
            continue   # the base's own: already in every image made from it
        name, _, value = entry.partition("=")
        if CREDENTIALS_IN_URL.search(value) or masker(value) != value:
            found.append(name)
    return found


def refusal(names: list[str], build_env: Iterable[str], program: str) -> ConfigError:
    """The error for a commit refused because of ``names``: what each one is, and the fix."""
    passed = [n for n in names if n in set(build_env)]
    proxies = [n for n in names if n.lower() in PROXIES and n not in passed]
    others = [n for n in names if n not in passed and n not in proxies]
    said = []
    if passed:
        said.append(f"{', '.join(passed)} (LWC_BUILD_ENV): pass it without credentials, or "
                    "keep it out of LWC_BUILD_ENV")
    if proxies:
        where = ("the 'proxies' of your docker config (config.json)" if program == "docker"
                 else "your environment's proxy variables, which podman passes into every "
                      "container (containers.conf: http_proxy = true)")
        said.append(f"{', '.join(proxies)}, from {where}: use a proxy address without "
                    "user:password@, or turn that passing off")
    if others:
        said.append(f"{', '.join(others)}: set by the engine for every container; remove "
                    "the credentials there")
    setting = "LWC_BUILD_ENV" if passed else names[0]
    return ConfigError(setting, "the build container's environment carries credentials, and "
                                f"a commit keeps it in the image: {'; '.join(said)}. Nothing "
                                "was committed or pushed (the values are not shown)")
