"""The pipeline `lwcontainer init` writes, run by a real GitLab CI executor (gitlab-ci-local
4.65.0, docker executor on the test bed's engine), offline: a branch, a tag and a merge-request
pipeline. Stand-ins: FROM is the bed's CMS-like base in the bed's registry; the publish job's
image is a Debian distro Python (PEP 668) that is also gitlab-ci-local's helper image; the
package index is a directory of wheels (lwcontainer's, built here, and its dependencies, which
scripts/testbed.sh downloads once) served on loopback; /cvmfs is the fixture CVMFS. The helper
checks the project out writable by everyone, as GitLab's docker executor does."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from conftest import EXAMPLE, PYTHONPATH, ROOT, free_port

GITLAB_CI_LOCAL = "4.65.0"
FIXTURE_CVMFS = ROOT / "tests" / "fixtures" / "cvmfs"
BINARY = "/home/cmsusr/CMSSW_10_6_8_patch1/bin/slc7_amd64_gcc820/myanalysis"
AREA = "/home/cmsusr/CMSSW_10_6_8_patch1/src/AnalysisCode"
EXPECTED = "MyAnalysis built against CMSSW_10_6_8_patch1 from fixture CVMFS"
PREDEFINED = ("CI_REGISTRY", "CI_REGISTRY_IMAGE", "CI_DEFAULT_BRANCH", "CI_COMMIT_BRANCH",
              "CI_COMMIT_TAG", "CI_PIPELINE_SOURCE", "CI_COMMIT_REF_NAME",
              "CI_MERGE_REQUEST_IID", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")


@pytest.fixture(scope="module")
def gitlab_ci_local() -> str:
    found = shutil.which("gitlab-ci-local")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.strip() \
        if found else ""
    if version != GITLAB_CI_LOCAL:
        message = (f"gitlab-ci-local {GITLAB_CI_LOCAL} is missing (found {version or 'none'}); "
                   "scripts/testbed.sh packages installs it")
        if os.environ.get("LWC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def index(testbed, tmp_path_factory):
    """A package index on loopback: one directory per project (pip reads the listing)."""
    root = tmp_path_factory.mktemp("index")
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    found = [*Path(testbed["LWC_TESTBED_WHEELS"]).glob("*.whl"), *wheels.glob("*.whl")]
    for wheel in found:
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        (root / project).mkdir(exist_ok=True)
        shutil.copy(wheel, root / project / wheel.name)
    assert (root / "lwcontainer").is_dir() and (root / "oras").is_dir()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(timeout=10)


class Project:
    """An analysis repository made by `lwcontainer init`, and gitlab-ci-local runs of it."""

    def __init__(self, job, base: str, index: str, program: str, root: Path) -> None:
        self.job, self.bed, self.program, self.index = job, job.bed, program, index
        self.path = root / "gitlab-project"
        self.path.mkdir()
        shutil.copytree(EXAMPLE / "MyAnalysis", self.path / "MyAnalysis")
        self.git("init", "-q", "-b", "main")
        self.git("remote", "add", "origin", "https://gitlab.example/cms/analysis.git")
        done = subprocess.run([sys.executable, "-m", "lwcontainer", "init", "--base-image", base],
                              cwd=self.path, capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "HOME": str(job.home),
                                   **PYTHONPATH})
        assert done.returncode == 0, done.stderr
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "init")
        # the secret goes into gitlab-ci-local's variables file (untracked: never copied into
        # a job's checkout), not onto a command line
        (self.path / ".gitlab-ci-local-variables.yml").write_text(
            f"CI_REGISTRY_PASSWORD: {json.dumps(self.bed.password)}\n")
        self.repository = f"{self.bed['LWC_TESTBED_REGISTRY']}/lwc-tests/gcl-{job.token}"

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=t@example", "-c", "user.name=t", *args],
                              cwd=self.path, check=True, capture_output=True,
                              text=True).stdout.strip()

    def pipeline(self, **variables: str) -> subprocess.CompletedProcess:
        shutil.rmtree(self.path / ".gitlab-ci-local", ignore_errors=True)
        given = {"LWC_PYTHON_IMAGE": self.bed["LWC_TESTBED_PYTHON"],
                 "LWC_PACKAGE_INDEX": self.index,
                 "CI_REGISTRY": self.bed["LWC_TESTBED_REGISTRY"],
                 "CI_REGISTRY_USER": self.bed["LWC_TESTBED_USER"],
                 "CI_REGISTRY_IMAGE": self.repository, "CI_DEFAULT_BRANCH": "main",
                 **variables}
        argv = [self.program, "--no-umask", "--network", "host", "--no-color",
                "--helper-image", self.bed["LWC_TESTBED_PYTHON"],
                "--volume", f"{FIXTURE_CVMFS}:/cvmfs:ro",
                "--ignore-predefined-vars", ",".join(PREDEFINED)]
        for key, value in given.items():
            argv += ["--variable", f"{key}={value}"]
        env = {**os.environ, "DOCKER_HOST": self.bed["DOCKER_HOST"],
               "DOCKER_CONFIG": str(self.job.home / ".gcl-docker")}
        return subprocess.run(argv, cwd=self.path, env=env, capture_output=True, text=True,
                              timeout=900)

    def report(self) -> dict[str, str | None]:
        return dotenv_values(self.path / ".gitlab-ci-local" / "artifacts" / "lwc-publish" /
                             ".gitlab-ci-reports" / "dotenv" / "lwcontainer.env")

    def tags(self) -> list[str]:
        """The tags of this project's repository in the bed's registry (its API, no engine)."""
        host, path = self.repository.split("/", 1)
        request = urllib.request.Request(f"http://{host}/v2/{path}/tags/list")
        credentials = f"{self.bed['LWC_TESTBED_USER']}:{self.bed.password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return sorted(json.load(answer).get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def pull(self, image: str) -> None:
        env = {**os.environ, "DOCKER_CONFIG": str(self.job.home / ".docker")}
        self.bed.docker("login", "--username", self.bed["LWC_TESTBED_USER"], "--password-stdin",
                        self.bed["LWC_TESTBED_REGISTRY"], input=self.bed.password, env=env)
        self.bed.docker("pull", "--quiet", image, env=env)

    def cleanup(self) -> None:
        names = self.bed.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        for name in names:
            if name.startswith("gcl-"):  # gitlab-ci-local's job containers, if any were left
                self.bed.docker("rm", "-f", name, check=False)
        images = self.bed.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        mine = [i for i in images if i.startswith(self.repository)]
        if mine:
            self.bed.docker("rmi", "-f", *mine, check=False)


@pytest.fixture
def project(job, base, index, gitlab_ci_local, tmp_path):
    project = Project(job, base, index, gitlab_ci_local, tmp_path)
    yield project
    project.cleanup()


def passed(done: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"^ PASS +(\S+)", done.stdout, re.M)


def test_a_branch_pipeline_on_the_default_branch_builds_and_pushes(project):
    done = project.pipeline()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert passed(done) == ["lwc-capture", "lwc-publish"]
    # the venv was made in a distro Python without ensurepip, and filled by its pip
    assert 'pip="python3 -I -m pip --python /tmp/lwc-venv/bin/python"' in done.stdout
    assert "externally-managed-environment" not in done.stdout
    # the scaffold's own variables are known (lwcontainer logs to stderr)
    assert '"event": "pushed"' in done.stderr and "unknown_setting" not in done.stderr
    sha = project.git("rev-parse", "--short=8", "HEAD")
    assert sha in project.tags()
    report = project.report()  # the dotenv report, as a later job gets it
    assert report["LWC_IMAGE"] == f"{project.repository}:{sha}"
    assert report["LWC_IMAGE_DIGEST"].startswith(f"{project.repository}@sha256:")
    image = report["LWC_IMAGE_DIGEST"]
    project.pull(image)
    ran = project.bed.docker("run", "--rm", "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", image, BINARY)
    assert ran.stdout.strip() == EXPECTED
    # the checkout was writable by everyone; the image's copy of the analysis is not
    found = project.bed.docker("run", "--rm", "--user", "0", image, "find", AREA,
                               "-perm", "-0002", "(", "-type", "f", "-o", "-type", "d", ")")
    assert found.stdout.split() == []


def test_a_tag_pipeline_pushes(project):
    project.git("tag", "v1.2.3")
    done = project.pipeline(CI_COMMIT_TAG="v1.2.3", CI_COMMIT_BRANCH="",
                            CI_COMMIT_REF_NAME="v1.2.3")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert passed(done) == ["lwc-capture", "lwc-publish"]
    assert project.git("rev-parse", "--short=8", "HEAD") in project.tags()
    assert project.report()["LWC_IMAGE_DIGEST"]


def test_a_merge_request_pipeline_builds_and_checks_and_pushes_nothing(project):
    project.git("checkout", "-q", "-b", "feature")
    (project.path / "MyAnalysis" / "README").write_text("a change under review\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "change")
    done = project.pipeline(CI_PIPELINE_SOURCE="merge_request_event", CI_COMMIT_BRANCH="",
                            CI_MERGE_REQUEST_IID="7",
                            CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="feature")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # both jobs are in the pipeline (publish's needs: finds its capture), both pass
    assert passed(done) == ["lwc-capture", "lwc-publish"]
    log = (done.stdout + done.stderr).splitlines()
    skipped = [line for line in log
               if '"stage": "push"' in line and '"outcome": "skipped"' in line]
    assert skipped and "LWC_PUSH=never" in skipped[0], done.stderr[-4000:]  # checked, not pushed
    assert project.tags() == []
    assert not project.report().get("LWC_IMAGE_DIGEST")


def test_every_variant_of_init_lists_its_jobs_in_every_pipeline(gitlab_ci_local, tmp_path):
    """gitlab-ci-local's own evaluation of the jobs' rules (its --list-json) for branch, tag
    and merge-request pipelines: every `needs:` names a job of the same pipeline."""
    for n, args in enumerate([(), ("--engine", "docker"),
                              ("--matrix", "r.io/a/cc7:1", "--matrix", "r.io/a/el8:2")]):
        path = tmp_path / str(n)
        path.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
        done = subprocess.run([sys.executable, "-m", "lwcontainer", "init", *args], cwd=path,
                              capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                                   **PYTHONPATH})
        assert done.returncode == 0, done.stderr
        subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q",
                        "--allow-empty", "-m", "x"], cwd=path, check=True)
        ci = yaml.safe_load((path / ".gitlab-ci.yml").read_text())
        declared = {k for k in ci if not k.startswith(".") and isinstance(ci[k], dict)
                    and k not in ("variables", "workflow")}
        for kind in ({}, {"CI_COMMIT_TAG": "v1", "CI_COMMIT_BRANCH": ""},
                     {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_COMMIT_BRANCH": ""}):
            argv = [gitlab_ci_local, "--list-json", "--ignore-predefined-vars",
                    ",".join(PREDEFINED)]
            for key, value in kind.items():
                argv += ["--variable", f"{key}={value}"]
            listed = subprocess.run(argv, cwd=path, capture_output=True, text=True, timeout=120)
            assert listed.returncode == 0, listed.stderr[-2000:]
            jobs = json.loads(listed.stdout)
            names = {re.sub(r": \[.*\]$", "", j["name"]) for j in jobs if j["when"] != "never"}
            assert names == declared, (args, kind)
            for j in jobs:
                assert {n["job"] if isinstance(n, dict) else n for n in j.get("needs") or []} \
                    <= names
