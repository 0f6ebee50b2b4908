"""The package a CMS group installs: sdist and wheel build with the declared backend, pass
twine's check, carry what they need (the capture template; the sdist its whole test suite),
and the sdist's own tests collect and run."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


BUILT: dict[str, str] = {}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    BUILT["output"] = built.stdout + built.stderr
    return out


def test_the_license_is_a_pep_639_expression_without_deprecation_noise(dist):
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    assert b"License-Expression: MIT" in metadata
    assert b"Classifier: License ::" not in metadata
    assert "deprecat" not in BUILT["output"].lower(), BUILT["output"][-3000:]


def test_sdist_and_wheel_pass_twines_check(dist):
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2
    checked = subprocess.run([str(BIN / "twine"), "check", "--strict", *files],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_wheel_carries_the_capture_template_and_the_license(dist):
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lwcontainer/engines/inplace/capture.sh" in names
    assert any(n.endswith("LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    assert b"Requires-Dist: oras" in metadata


def test_the_sdists_tests_collect_and_run(dist, tmp_path):
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        sdist.extractall(tmp_path, filter="data")
    source = next(tmp_path.iterdir())
    env = {**os.environ, "PYTHONPATH": str(source)}
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "-p", "no:cacheprovider"], cwd=source, env=env,
                               capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    assert "error" not in collected.stdout.lower().splitlines()[-1]
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-m", "not docker", "tests/test_reference.py",
                          "tests/test_inplace_image.py", "tests/test_commands.py",
                          "tests/test_scripts.py", "tests/test_scaffold.py", "-k",
                          "not test_scaffold or component"], cwd=source, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:]
    imported = subprocess.run([sys.executable, "-c",
                               "import lwcontainer; print(lwcontainer.__file__)"],
                              cwd=source, env=env, capture_output=True, text=True)
    assert imported.stdout.startswith(str(source))  # the sdist's own code was tested
