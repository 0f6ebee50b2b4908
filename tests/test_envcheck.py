"""What a commit would keep of the build container's environment (engines/docker/envcheck.py)."""
from __future__ import annotations

import pytest

from lwcontainer.engines.docker.envcheck import carrying_credentials, refusal
from lwcontainer.errors import ExitCode
from lwcontainer.output.masking import Masker

BASE = ["PATH=/usr/bin:/bin", "SITE=https://reader:base-pw@mirror.example/"]


@pytest.mark.parametrize("entry,carries", [
    ("HTTPS_PROXY=http://alice:s3cret@proxy:3128", True),
    ("http_proxy=socks5h://a:b@proxy", True),
    ("REPO=git+https://bob:tok@git.example/x.git#egg=x", True),
    ("HTTPS_PROXY=http://proxy.example:3128", False),
    ("REPO=https://bob@git.example/x.git", False),          # a user, no password
    ("NOTE=see http://a.example/x?u=a:b@c", False),         # not in the authority
    ("TOKENISH=the-job-token-value-123", True),             # a value lwcontainer masks
    ("SITE=https://reader:base-pw@mirror.example/", False),  # the base's own
])
def test_values_with_credentials_the_run_added_are_found(entry, carries):
    masker = Masker(["the-job-token-value-123"])
    found = carrying_credentials([*BASE, entry], BASE, masker)
    assert found == ([entry.partition("=")[0]] if carries else [])


def test_the_refusal_names_where_each_came_from_and_never_a_value():
    error = refusal(["REPO", "HTTPS_PROXY"], ["REPO"], "docker")
    assert error.exit_code == ExitCode.CONFIG and error.setting == "LWC_BUILD_ENV"
    text = str(error)
    assert "REPO (LWC_BUILD_ENV)" in text and "docker config (config.json)" in text
    assert "Nothing was committed or pushed" in text
    podman = str(refusal(["https_proxy"], [], "podman"))
    assert podman.startswith("https_proxy: ") and "containers.conf: http_proxy = true" in podman
