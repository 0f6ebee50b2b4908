"""The capture script: a bash template shipped in the package (capture.sh), rendered with this
lwcontainer's version and the project's build script. The scaffold writes it into the project;
the single-job mode runs it directly."""
from __future__ import annotations

from importlib.resources import files

from ... import __version__
from ...ci.templates import CAPTURE_SCRIPT as SCRIPT_PATH  # where init writes it

TEMPLATE = "capture.sh"


def render(build_script: str = ".gitlab/build.sh") -> str:
    if "@" in build_script or "\n" in build_script or "'" in build_script:
        raise ValueError(f"build script path {build_script!r} cannot go into the script")
    text = files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return text.replace("@VERSION@", __version__).replace("@BUILD_SCRIPT@", build_script)
