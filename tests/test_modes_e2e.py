"""World-writable files in the new layer, on the real engines: the commit names them and never
changes a mode, and names none of the base's own; the scaffolded build.sh does not carry the
checkout's permissive modes."""
from __future__ import annotations

import secrets

import pytest

from test_podman_e2e import podman_bed, podman_root, root_podman

pytestmark = pytest.mark.docker

AREA = "/home/cmsusr/CMSSW_10_6_8_patch1/src/AnalysisCode/MyAnalysis"


def world_writable(job, image: str) -> list[str]:
    found = job.bed.docker("run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", image, "-c",
                           f"find {AREA} \\( -type f -o -type d \\) -perm -0002")
    return found.stdout.split()


def test_the_commit_names_world_writable_files_and_changes_no_mode(job):
    """The lesson's build.sh moves the checkout's 0666 files into the image as they are. One
    more, in a directory only its owner (cmsusr) may enter: the check, root with no capability
    but DAC_OVERRIDE, still sees it."""
    script = job.project / ".gitlab" / "build.sh"
    script.write_text(script.read_text() + "\nmkdir -m 700 /home/cmsusr/private\n"
                      "touch /home/cmsusr/private/open && chmod 666 /home/cmsusr/private/open\n")
    result = job.run(CI_REGISTRY=None)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = result.events("world_writable")
    assert len(warned) == 1, result.stderr[-3000:]
    assert f"{AREA}/bin/myanalysis.cc" in warned[0]["paths"]
    assert "/home/cmsusr/private/open" in warned[0]["paths"]
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


# A base image with world-writable entries of its own (the build leaves them alone).
BASE_RECIPE = ("mkdir -p /opt/shared && echo x > /opt/shared/notes && chmod 666 /opt/shared/notes"
               " && chmod 777 /opt/shared")


def base_with_world_writable(cli, base: str, ref: str) -> None:
    """``cli(*args)`` runs the engine's CLI; the base is committed as ``ref``, config intact."""
    name = f"lwc-wwbase-{secrets.token_hex(3)}"
    try:
        cli("run", "--name", name, "--user", "0", "--network", "none", base, "/bin/sh", "-c",
            BASE_RECIPE)
        cli("commit", "--change", "USER cmsusr", "--change", 'CMD ["/bin/bash"]', name, ref)
    finally:
        cli("rm", "-f", name)


def named(result) -> list[str]:
    warned = result.events("world_writable")
    assert len(warned) == 1, result.stderr[-3000:]
    return warned[0]["paths"]


def steps(result) -> list[str]:
    return [r["command"] for r in result.events("step")]


def test_the_layer_check_reads_the_build_containers_layer_and_never_names_the_base(job):
    """Docker's overlay2: the check container mounts the build container's own layer; no
    ``docker diff``, and it is gone afterwards."""
    base = f"{job.repository}-base:ww"
    base_with_world_writable(lambda *a: job.bed.docker(*a, check=a[0] != "rm"),
                             job.bed["LWC_TESTBED_CMS_BASE"], base)
    result = job.run(FROM=base, CI_REGISTRY=None, LWC_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr[-3000:]
    paths = named(result)
    assert f"{AREA}/bin/myanalysis.cc" in paths
    assert not [p for p in paths if p.startswith("/opt/shared")], paths
    ran = steps(result)
    assert [c for c in ran if c.startswith("docker start --attach") and c.endswith("-modes")]
    assert not [c for c in ran if c.startswith("docker diff")]
    assert job.containers() == []
    image = f"{job.repository}:c0ffee12"
    found = job.bed.docker("run", "--rm", "--user", "0", "--entrypoint", "/usr/bin/find", image,
                           "/opt/shared", "-perm", "-0002").stdout.split()
    assert found == ["/opt/shared", "/opt/shared/notes"]  # in the image, as the base had them


def test_podman_on_vfs_names_only_the_layers_entries(job):
    """vfs keeps no layer directory of the build container's own: the diff names the layer's
    entries and the committed image their modes."""
    podman_bed(job.bed)
    base = f"localhost/lwc-tests/wwbase-{job.token}:1"

    def podman(*args: str) -> None:
        done = podman_root(job.bed, *args)
        assert done.returncode == 0 or args[0] == "rm", done.stderr[-2000:]
    try:
        base_with_world_writable(podman, job.bed["LWC_TESTBED_CMS_BASE"], base)
        result = job.run(FROM=base, CI_REGISTRY=None, LWC_LOG_LEVEL="debug",
                         **root_podman(job.bed))
        assert result.returncode == 0, result.stderr[-3000:]
        paths = named(result)
        assert f"{AREA}/bin/myanalysis.cc" in paths
        assert not [p for p in paths if p.startswith("/opt/shared")], paths
        assert [c for c in steps(result) if c.startswith("podman diff")]
    finally:
        podman_root(job.bed, "rmi", "--force", base, f"{job.repository}:c0ffee12")
