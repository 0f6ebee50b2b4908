"""Exit codes and the exception classes that carry them: the one place failures map to codes."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    CONFIG = 2
    ENGINE = 3
    LOGIN = 4
    CVMFS = 5
    BUILD = 6
    COMMIT = 7
    PUSH = 8
    INTERRUPTED = 130


EXIT_MEANINGS = {
    ExitCode.OK: "done",
    ExitCode.INTERNAL: "internal error (a bug: the log has the traceback, secrets masked)",
    ExitCode.CONFIG: "configuration or usage error",
    ExitCode.ENGINE: "the engine or a registry unreachable (the error names which)",
    ExitCode.LOGIN: "registry login refused",
    ExitCode.CVMFS: "CVMFS not available in time",
    ExitCode.BUILD: "build script (or the capture) failed; its own exit code is logged",
    ExitCode.COMMIT: "commit or tag failed",
    ExitCode.PUSH: "push failed (the committed image stays tagged locally; inplace: the "
                   "captured layer stays)",
    ExitCode.INTERRUPTED: "interrupted (SIGINT/SIGTERM/SIGHUP), after cleanup",
}


class LwcError(Exception):
    """A failure the user can act on; ``str()`` is the message, ``exit_code`` the contract."""

    exit_code = ExitCode.CONFIG



class ConfigError(LwcError):
    exit_code = ExitCode.CONFIG

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class EngineError(LwcError):
    exit_code = ExitCode.ENGINE


class LoginError(LwcError):
    exit_code = ExitCode.LOGIN


class CvmfsError(LwcError):
    exit_code = ExitCode.CVMFS


class BuildError(LwcError):
    exit_code = ExitCode.BUILD


class CommitError(LwcError):
    exit_code = ExitCode.COMMIT


class PushError(LwcError):
    exit_code = ExitCode.PUSH


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the signal handler (signals.py), so every ``finally`` still
    runs."""

    def __init__(self, signal_name: str = "SIGTERM") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
