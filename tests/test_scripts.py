"""The shell the project ships (the generated capture script above all) is linted like code."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from lwcontainer.engines.inplace.capture import render

SCRIPTS = ["scripts/testbed.sh", "scripts/automounter-standin.sh", ".ci/run",
           "scripts/bench/plain-sequence.sh"]


@pytest.fixture(scope="module")
def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if not found:
        if os.environ.get("LWC_REQUIRE_DOCKER") == "1":
            pytest.fail("shellcheck is missing (scripts/testbed.sh packages installs it)")
        pytest.skip("shellcheck is not installed")
    return found


def test_the_generated_capture_script_passes_shellcheck(shellcheck, tmp_path):
    script = tmp_path / "lwcontainer-capture.sh"
    script.write_text(render(".gitlab/build.sh"))
    done = subprocess.run([shellcheck, "-S", "warning", str(script)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("path", SCRIPTS)
def test_the_projects_scripts_pass_shellcheck(shellcheck, path):
    done = subprocess.run([shellcheck, "-S", "warning", str(ROOT / path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
