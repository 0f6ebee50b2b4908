"""The job's secret variables: the one list that the masker, the settings (``LWC_BUILD_ENV``,
public values), the children's environments and the in-place capture (``capture.sh`` is rendered
from it, for its build environment and its search of the layer) all use.

A secret is a variable named here, a ``CI_JOB_JWT*`` variable, any variable whose name matches
the secret-name rule, or a name the user lists in ``LWC_SECRET_VARIABLES``.
"""
from __future__ import annotations

import base64
import json
import re
from typing import Iterable, Mapping

#: GitLab's and GitHub's secret variables, by name. ``CI_REPOSITORY_URL`` embeds the job token
#: (``https://gitlab-ci-token:<token>@…``); ``DOCKER_AUTH_CONFIG`` holds registry credentials.
JOB_SECRET_VARIABLES = ("CI_JOB_TOKEN", "CI_BUILD_TOKEN", "CI_REGISTRY_PASSWORD",
                        "CI_DEPLOY_PASSWORD", "CI_REPOSITORY_URL", "DOCKER_AUTH_CONFIG",
                        "GITHUB_TOKEN")
#: Every variable whose name starts so is a secret (``CI_JOB_JWT``, ``CI_JOB_JWT_V1``, …).
JOB_SECRET_PREFIXES = ("CI_JOB_JWT",)
#: The secret-name rule: a name containing one of these words (any case) holds a secret.
SECRET_NAME_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PASSWD", "CREDENTIAL")
#: The user's own secret variables, by name (comma or space separated).
USER_SECRETS = "LWC_SECRET_VARIABLES"
#: Shorter values are not searched for or masked on their own: they would match everywhere.
MIN_SECRET_LENGTH = 4

_NAME_RULE = re.compile("|".join(SECRET_NAME_WORDS), re.IGNORECASE)
_NOT_SECRETS = frozenset({USER_SECRETS})  # a list of names, not a secret


def user_secret_names(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(n for n in re.split(r"[\s,]+", env.get(USER_SECRETS) or "") if n)


def is_secret_name(name: str, user_names: Iterable[str] = ()) -> bool:
    """Does a variable of this name hold a secret (whatever its value)?"""
    if name in _NOT_SECRETS:
        return False
    return (name in JOB_SECRET_VARIABLES or name.startswith(JOB_SECRET_PREFIXES)
            or bool(_NAME_RULE.search(name)) or name in set(user_names))


def secret_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """The names in ``env`` that hold secrets, sorted."""
    user = user_secret_names(env)
    return tuple(sorted(name for name in env if is_secret_name(name, user)))


def secret_values(env: Mapping[str, str]) -> dict[str, str]:
    """Secret name → value, for every secret in ``env`` long enough to search for."""
    return {name: env[name] for name in secret_names(env)
            if len(env[name] or "") >= MIN_SECRET_LENGTH}


def shell_case_pattern() -> str:
    """The same rule as a bash ``case`` pattern list over an upper-cased name (capture.sh)."""
    words = [f"*{word}*" for word in SECRET_NAME_WORDS]
    prefixes = [f"{prefix}*" for prefix in JOB_SECRET_PREFIXES]
    return "|".join((*JOB_SECRET_VARIABLES, *prefixes, *words))


def hidden_parts(name: str, value: str) -> tuple[str, ...]:
    """The secrets inside a structured secret's value, which text may show on their own: the
    password of a URL's ``user:password@`` (``CI_REPOSITORY_URL``), each ``auth`` of a docker
    config (``DOCKER_AUTH_CONFIG``) and the ``user:password`` it encodes."""
    parts: list[str] = []
    for match in re.finditer(r"://[^/@\s:]*:([^/@\s]+)@", value):
        parts.append(match.group(1))
    if name == "DOCKER_AUTH_CONFIG":
        try:
            auths = json.loads(value).get("auths") or {}
            encoded = [entry.get("auth") or "" for entry in auths.values()]
        except (ValueError, AttributeError):
            encoded = []
        for auth in filter(None, encoded):
            parts.append(auth)
            try:
                pair = base64.b64decode(auth, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            parts.extend((pair, pair.partition(":")[2]))
    return tuple(part for part in parts if len(part) >= MIN_SECRET_LENGTH)


def masked_texts(env: Mapping[str, str]) -> tuple[str, ...]:
    """Every text the masker hides: each secret's value and the secrets hidden inside it."""
    out: list[str] = []
    for name, value in secret_values(env).items():
        out.extend((value, *hidden_parts(name, value)))
    return tuple(out)
