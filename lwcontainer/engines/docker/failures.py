"""What a failed docker call means for the user: the exit code and a message that names the
setting at fault and the fix."""
from __future__ import annotations

from ...config.reference import parse
from ...errors import ConfigError, EngineError, LoginError, LwcError
from ...executor import Completed, is_auth_error, tail_lines

NOT_FOUND_MARKERS = ("manifest unknown", "not found", "no such image", "repository does not exist",
                     "invalid reference format")
NETWORK_MARKERS = ("no such host", "connection refused", "i/o timeout", "network is unreachable",
                   "tls handshake timeout", "dial tcp", "server misbehaving")


def pull_failure(setting: str, ref: str, done: Completed, logged_in: bool) -> LwcError:
    """A pull that failed: an image that does not exist is the setting's fault (exit 2); access
    denied is the login's (exit 4) when this run logged in to that registry, else most likely a
    misspelled or private image (exit 2); a network failure names the registry (exit 3)."""
    said = tail_lines(done.stderr) or "no message"
    text = done.stderr.lower()
    if is_auth_error(text):
        if logged_in:
            return LoginError(f"pulling {ref} ({setting}) was refused with this run's login: "
                              f"{said}")
        return ConfigError(setting, f"{ref} could not be pulled: access denied. The image may "
                                    f"be misspelled, or private (then log in to its registry "
                                    f"first): {said}")
    if any(marker in text for marker in NETWORK_MARKERS):
        host = parse(ref).normalized.domain
        where = f"registry {host}" if host else "its registry"
        return EngineError(f"pulling {ref} ({setting}) failed: {where} could not be reached: "
                           f"{said}")
    if any(marker in text for marker in NOT_FOUND_MARKERS):
        return ConfigError(setting, f"{ref} does not exist in its registry and the engine does "
                                    f"not have it locally; check the name and tag: {said}")
    return EngineError(f"pulling {ref} ({setting}) failed: {said}")


def worth_retrying_pull(stderr: str) -> bool:
    """A pull is tried again only for what may pass: not a refusal, not a missing image."""
    text = stderr.lower()
    return not is_auth_error(text) and not any(m in text for m in NOT_FOUND_MARKERS)


def login_failure(registry: str, message: str, done: Completed) -> LwcError:
    """A refused login is the credentials' fault (exit 4); a registry that cannot be reached
    (DNS, refused connection, timeout) is not a refusal (exit 3)."""
    text = done.stderr.lower()
    if not is_auth_error(text) and any(marker in text for marker in NETWORK_MARKERS):
        return EngineError(f"registry {registry} (CI_REGISTRY) could not be reached: {message}")
    return LoginError(message)
