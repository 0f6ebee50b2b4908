"""lwcontainer init: what it writes, and that it never overwrites without --force."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def init(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LWC_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "lwcontainer", "init", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_init_writes_a_ci_job_and_an_executable_build_script(tmp_path):
    done = init(tmp_path, "--cmssw-release", "CMSSW_13_0_0", "--base-image", "r.io/cms/el8:1")
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())["build_image"]
    assert job["image"].startswith("docker:") and job["image"] != "docker:latest"
    assert job["services"] == [job["image"] + "-dind"]
    assert job["variables"]["DOCKER_TLS_CERTDIR"] == "/certs"
    assert job["variables"]["FROM"] == "r.io/cms/el8:1"
    assert job["variables"]["TO"] == "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA"
    assert "python3 -m lwcontainer" in job["script"]
    assert job["artifacts"]["reports"]["dotenv"] == "lwcontainer.env"
    script = tmp_path / ".gitlab" / "build.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for practice in ("shopt -s expand_aliases",
                     "set +u\nsource /cvmfs/cms.cern.ch/cmsset_default.sh",
                     'cmsrel "$CMSSW_RELEASE"', "cmsenv", "scram b", "CMSSW_13_0_0"):
        assert practice in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert done.stderr.count('"event": "wrote"') == 2


def test_init_refuses_to_overwrite_then_force_does(tmp_path):
    (tmp_path / ".gitlab-ci.yml").write_text("mine: true\n")
    done = init(tmp_path)
    assert done.returncode == 2 and ".gitlab-ci.yml" in done.stderr
    assert (tmp_path / ".gitlab-ci.yml").read_text() == "mine: true\n"
    assert not (tmp_path / ".gitlab" / "build.sh").exists()  # nothing written at all
    assert init(tmp_path, "--force").returncode == 0
    assert "build_image" in (tmp_path / ".gitlab-ci.yml").read_text()


@pytest.mark.parametrize("args", [("--cmssw-release", "10_6; rm -rf /"),
                                  ("--base-image", "Bad Image")])
def test_init_validates_its_options(tmp_path, args):
    done = init(tmp_path, *args)
    assert done.returncode == 2 and args[0] in done.stderr
    assert not (tmp_path / ".gitlab-ci.yml").exists()
