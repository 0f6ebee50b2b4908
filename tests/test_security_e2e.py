"""Security findings that need a real build: what the build script can plant in the checkout."""
from __future__ import annotations

import json

import pytest


def test_links_the_build_plants_at_the_report_are_never_written_through(job, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    build = job.project / ".gitlab" / "build.sh"
    build.write_text(build.read_text() + f"\nln -sf {victim} $MY_BUILD_DIR/lwcontainer.env\n"
                     f"ln -sf {victim} $MY_BUILD_DIR/.lwcontainer.env.tmp\n")
    result = job.run()
    assert result.returncode == 0, result.stderr[-3000:]
    assert victim.read_text() == "precious\n"
    report = job.project / "lwcontainer.env"
    assert report.is_file() and not report.is_symlink()
    assert "LWC_IMAGE_DIGEST=" in report.read_text()
    assert result.events("report_link_replaced")


@pytest.mark.parametrize("source", ["docker-config-proxy", "build-env"])
def test_credentials_the_container_environment_would_carry_into_the_image_are_refused(job, source):
    """docker commit keeps the build container's Env in the image: a proxy of the docker config
    with user:password@, or a variable passed by LWC_BUILD_ENV with one, would be pushed."""
    secret = "s3cret-" + job.token
    overrides = {}
    if source == "docker-config-proxy":
        config = job.home / ".docker"
        config.mkdir()
        (config / "config.json").write_text(json.dumps({"proxies": {"default": {
            "httpsProxy": f"http://alice:{secret}@proxy.invalid:3128",
            "noProxy": "127.0.0.1,localhost"}}}))
    else:
        overrides = {"REPO_URL": f"https://bob:{secret}@git.invalid/x.git",
                     "LWC_BUILD_ENV": "REPO_URL"}
    result = job.run(**overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.events("failed")[0]["error"]
    assert "carries credentials, and a commit keeps it in the image" in error
    if source == "build-env":
        assert error.startswith("LWC_BUILD_ENV: ") and "REPO_URL (LWC_BUILD_ENV)" in error
    else:
        assert "HTTPS_PROXY" in error and "docker config (config.json)" in error
    assert secret not in result.stdout + result.stderr
    assert [e["outcome"] for e in result.events("stage_done") if e["stage"] == "commit"] \
        == ["failed"]
    assert not result.events("image_committed")
    images = job.bed.docker("images", "--format", "{{.Repository}}").stdout.split()
    assert not [i for i in images if i.startswith(job.repository)]
