"""World-writable files in the new layer, on the real engine: the commit names them and never
changes a mode; the scaffolded build.sh does not carry the checkout's permissive modes."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker

AREA = "/home/cmsusr/CMSSW_10_6_8_patch1/src/AnalysisCode/MyAnalysis"


def world_writable(job, image: str) -> list[str]:
    found = job.bed.docker("run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", image, "-c",
                           f"find {AREA} \\( -type f -o -type d \\) -perm -0002")
    return found.stdout.split()


def test_the_commit_names_world_writable_files_and_changes_no_mode(job):
    """The lesson's build.sh moves the checkout's 0666 files into the image as they are."""
    result = job.run(CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = result.events("world_writable")
    assert len(warned) == 1, result.stderr[-3000:]
    assert f"{AREA}/bin/myanalysis.cc" in warned[0]["paths"]
    assert "/tmp" not in warned[0]["paths"]  # 1777: sticky, fine
    image = f"{job.repository}:c0ffee12"
    assert f"{AREA}/bin/myanalysis.cc" in world_writable(job, image)  # left exactly as built


def test_the_scaffolded_build_script_copies_without_the_checkouts_modes(job):
    (job.project / ".gitlab" / "build.sh").unlink()
    assert job.run("init", "--base-image", job.bed["LWC_TESTBED_CMS_BASE"]).returncode == 0
    for path in [job.project, *job.project.rglob("*")]:  # as GitLab's executors check out
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() or path.suffix == ".sh" else 0o666)
    result = job.run(CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not result.events("world_writable")
    image = f"{job.repository}:c0ffee12"
    assert world_writable(job, image) == []
    mode = job.bed.docker("run", "--rm", "--entrypoint", "stat", image, "-c", "%a",
                          f"{AREA}/bin/myanalysis.cc").stdout.strip()
    assert mode == "644"
