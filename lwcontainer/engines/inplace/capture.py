"""The capture script: a bash template shipped in the package (capture.sh), rendered with this
lwcontainer's version, the project's build script and the job's secret variables (the one list in
config/secrets.py, so the script refuses and searches for exactly what the settings and the
masker treat as secrets). The scaffold writes it into the project; the single-job mode runs it
directly."""
from __future__ import annotations

import re
from importlib.resources import files

from ... import __version__
from ...ci.templates import CAPTURE_SCRIPT
from ...config.secrets import MIN_SECRET_LENGTH, USER_SECRETS, shell_case_pattern

TEMPLATE = "capture.sh"
#: Where ``lwcontainer init`` writes it, relative to the project.
SCRIPT_PATH = CAPTURE_SCRIPT


def render(build_script: str = ".gitlab/build.sh") -> str:
    if "@" in build_script or "\n" in build_script or "'" in build_script:
        raise ValueError(f"build script path {build_script!r} cannot go into the script")
    pattern = shell_case_pattern()
    if not re.fullmatch(r"[A-Z0-9_*|]+", pattern) or not re.fullmatch(r"[A-Z_]+", USER_SECRETS):
        raise ValueError(f"secret names {pattern!r} cannot go into a case pattern")
    text = files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    for key, value in (("@VERSION@", __version__), ("@BUILD_SCRIPT@", build_script),
                       ("@SECRET_CASE@", pattern), ("@USER_SECRETS@", USER_SECRETS),
                       ("@SECRET_MIN_LENGTH@", str(MIN_SECRET_LENGTH))):
        text = text.replace(key, value)
    return text
