"""lwcontainer init: what it writes, and that it never overwrites without --force."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lwcontainer import __version__


def init(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LWC_LOG_FORMAT": "json",
           **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    return subprocess.run([sys.executable, "-m", "lwcontainer", "init", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_init_docker_writes_a_dind_job_and_an_executable_build_script(tmp_path):
    done = init(tmp_path, "--engine", "docker", "--cmssw-release", "CMSSW_13_0_0",
                "--base-image", "r.io/cms/el8:1")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    job = ci["build_image"]
    assert job["tags"] == ["$LWC_RUNNER_TAG"]
    assert "docker-privileged" not in ci["variables"].values()
    assert job["image"].startswith("docker:") and job["image"] != "docker:latest"
    assert job["services"] == [job["image"] + "-dind"]
    assert job["variables"]["DOCKER_TLS_CERTDIR"] == "/certs"
    assert job["variables"]["FROM"] == "r.io/cms/el8:1"
    assert job["variables"]["TO"] == "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA"
    assert "/tmp/lwc-venv/bin/python -I -m lwcontainer" in job["script"]
    assert job["artifacts"]["reports"]["dotenv"] == "lwcontainer.env"
    script = tmp_path / ".gitlab" / "build.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for practice in ("shopt -s expand_aliases",
                     "set +u\nsource /cvmfs/cms.cern.ch/cmsset_default.sh",
                     'cmsrel "$CMSSW_RELEASE"', "cmsenv", "scram b", "CMSSW_13_0_0"):
        assert practice in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert done.stderr.count('"event": "wrote"') == 3  # .gitlab-ci.yml, build.sh, .env
    assert "lwcontainer.env" in (tmp_path / ".gitignore").read_text().splitlines()


def test_init_inplace_is_the_default_and_writes_capture_and_publish_jobs(tmp_path):
    (tmp_path / ".gitignore").write_text("build/\nlwcontainer.env")  # no final newline
    done = init(tmp_path, "--base-image", "r.io/cms/el8:1")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    capture, publish = ci["lwc-capture"], ci["lwc-publish"]
    assert capture["extends"] == ".lwc-capture" and capture["variables"]["FROM"] == "r.io/cms/el8:1"
    assert ci[".lwc-capture"]["image"] == "$FROM"
    assert ci[".lwc-capture"]["tags"] == ["$LWC_RUNNER_TAG"]
    assert ci["variables"]["LWC_RUNNER_TAG"] == "cvmfs"
    assert ci[".lwc-capture"]["script"] == ["bash .gitlab/lwcontainer-capture.sh"]
    assert set(ci[".lwc-capture"]["artifacts"]["paths"]) == {"lwcontainer-layer.tar.gz",
                                                             "lwcontainer-layer.json"}
    assert publish["needs"] == ["lwc-capture"]
    assert ci[".lwc-publish"]["variables"]["LWC_ENGINE"] == "inplace"
    assert "/tmp/lwc-venv/bin/python -I -m lwcontainer publish" in ci[".lwc-publish"]["script"]
    assert ci[".lwc-publish"]["artifacts"]["reports"]["dotenv"] == "lwcontainer.env"
    install = " ".join(ci[".lwc-publish"]["script"])
    assert '--index-url "$LWC_PACKAGE_INDEX" "lwcontainer==' in install  # an exact version
    assert 'test -n "$LWC_PACKAGE_INDEX" ||' in install  # stops, saying why, while unset
    assert ci[".lwc-publish"]["rules"][1]["if"].startswith("$CI_COMMIT_TAG")
    assert ci[".lwc-publish"]["rules"][2]["variables"] == {"LWC_PUSH": "never"}
    build = (tmp_path / ".gitlab" / "build.sh").read_text()
    assert "export SCRAM_ARCH=${SCRAM_ARCH:-slc7_amd64_gcc820}" in build
    assert 'scram b -j "$BUILD_JOBS"' in build and "nproc" in build and "cpu.max" in build
    assert "ANALYSIS_DIRS" in ci["variables"]["LWC_BUILD_ENV"]
    capture_sh = tmp_path / ".gitlab" / "lwcontainer-capture.sh"
    assert os.access(capture_sh, os.X_OK)
    assert subprocess.run(["bash", "-n", str(capture_sh)]).returncode == 0
    assert (tmp_path / ".gitignore").read_text().splitlines() == [
        "build/", "lwcontainer.env", "lwcontainer-layer.tar.gz", "lwcontainer-layer.json"]


def test_init_inplace_matrix_pairs_each_publish_with_its_own_capture(tmp_path):
    done = init(tmp_path, "--matrix", "r.io/cms/cc7-cms:latest", "--matrix", "r.io/cms/el8-cms:1")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    for name, image in (("cc7-cms", "r.io/cms/cc7-cms:latest"),
                        ("el8-cms-1", "r.io/cms/el8-cms:1")):
        assert ci[f"lwc-capture-{name}"]["variables"]["FROM"] == image
        assert ci[f"lwc-publish-{name}"]["needs"] == [f"lwc-capture-{name}"]
        assert ci[f"lwc-publish-{name}"]["variables"]["TO"] == \
            f"$CI_REGISTRY_IMAGE/{name}:$CI_COMMIT_SHORT_SHA"


def test_init_refuses_to_overwrite_then_force_does(tmp_path):
    (tmp_path / ".gitlab-ci.yml").write_text("mine: true\n")
    done = init(tmp_path)
    assert done.returncode == 2 and ".gitlab-ci.yml" in done.stderr
    assert (tmp_path / ".gitlab-ci.yml").read_text() == "mine: true\n"
    assert not (tmp_path / ".gitlab" / "build.sh").exists()  # nothing written at all
    assert init(tmp_path, "--force").returncode == 0
    assert "lwc-capture" in (tmp_path / ".gitlab-ci.yml").read_text()


@pytest.mark.parametrize("args", [("--cmssw-release", "10_6; rm -rf /"),
                                  ("--base-image", "Bad Image")])
def test_init_validates_its_options(tmp_path, args):
    done = init(tmp_path, *args)
    assert done.returncode == 2 and args[0] in done.stderr
    assert not (tmp_path / ".gitlab-ci.yml").exists()


def test_init_can_install_from_a_pinned_git_url_but_not_a_bare_name(tmp_path):
    done = init(tmp_path, "--package-source", "git+https://gitlab.example/grp/lwcontainer.git@v0.1.0")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    assert ci[".lwc-publish"]["script"][1] == \
        '$pip install "git+https://gitlab.example/grp/lwcontainer.git@v0.1.0"'
    (tmp_path / "x").mkdir()
    refused = init(tmp_path / "x", "--package-source", "lwcontainer")
    assert refused.returncode == 2 and "--package-source" in refused.stderr


def test_the_scaffolded_build_script_copies_only_the_analysis_directories(tmp_path):
    (tmp_path / "Analysis").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / ".hidden").mkdir()
    assert init(tmp_path).returncode == 0
    build = (tmp_path / ".gitlab" / "build.sh").read_text()
    assert "ANALYSIS_DIRS=${ANALYSIS_DIRS:-Analysis docs}" in build
    assert 'for dir in $ANALYSIS_DIRS; do' in build


@pytest.mark.parametrize("args", [
    (), ("--engine", "docker"), ("--matrix", "r.io/a/cc7:1", "--matrix", "r.io/a/el8:2"),
    ("--engine", "docker", "--matrix", "r.io/a/cc7:1", "--matrix", "r.io/a/el8:2"),
    ("--package-source", "git+https://gitlab.example/g/lwcontainer.git@v0.1.0")])
def test_every_scaffolded_pipeline_is_valid_for_gitlab(tmp_path, args):
    """Validated against GitLab's own CI JSON schema (vendored by check-jsonschema)."""
    assert init(tmp_path, *args).returncode == 0
    checked = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"),
                              "--builtin-schema", "vendor.gitlab-ci",
                              str(tmp_path / ".gitlab-ci.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def check_schema(*paths: Path) -> None:
    checked = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"),
                              "--builtin-schema", "vendor.gitlab-ci", *map(str, paths)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_init_honours_build_script_and_build_env(tmp_path):
    done = init(tmp_path, "--build-script", "ci/make-image.sh",
                "--build-env", "CMSSW_RELEASE,MY_OPT")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    assert ci["variables"]["LWC_BUILD_SCRIPT"] == "ci/make-image.sh"
    assert ci["variables"]["LWC_BUILD_ENV"] == "CMSSW_RELEASE MY_OPT"
    assert os.access(tmp_path / "ci" / "make-image.sh", os.X_OK)
    assert not (tmp_path / ".gitlab" / "build.sh").exists()
    (tmp_path / "d").mkdir()
    docker = init(tmp_path / "d", "--engine", "docker", "--build-env", "")
    assert docker.returncode == 0, docker.stderr
    ci = yaml.safe_load((tmp_path / "d" / ".gitlab-ci.yml").read_text())
    assert ci["variables"]["LWC_BUILD_ENV"] == ""  # nothing passed into the build
    check_schema(tmp_path / ".gitlab-ci.yml", tmp_path / "d" / ".gitlab-ci.yml")


@pytest.mark.parametrize("args", [("--build-script", "../outside.sh"),
                                  ("--build-script", "/etc/build.sh"),
                                  ("--build-env", "CI_JOB_TOKEN"),
                                  ("--build-env", "A-B"),
                                  ("--component", "lwcontainer"),
                                  ("--component", "gitlab.cern.ch/g/lwcontainer@1.0",
                                   "--matrix", "r.io/a/b:1")])
def test_init_refuses_bad_build_options(tmp_path, args):
    done = init(tmp_path, *args)
    assert done.returncode == 2 and args[0] in done.stderr, done.stderr
    assert not (tmp_path / ".gitlab-ci.yml").exists()


def test_init_base_image_also_sets_from_in_dotenv(tmp_path):
    assert init(tmp_path, "--base-image", "r.io/cms/el9:2").returncode == 0
    from lwcontainer.config.sources import gather
    assert gather({}, {}, cwd=tmp_path)["FROM"] == "r.io/cms/el9:2"  # what a local run uses
    other = tmp_path / "other"
    other.mkdir()
    (other / ".env").write_text("LWC_EXTRA_TAGS=dev")  # kept, FROM added
    assert init(other, "--base-image", "r.io/cms/el9:2").returncode == 0
    assert (other / ".env").read_text().splitlines()[0] == "LWC_EXTRA_TAGS=dev"
    assert gather({}, {}, cwd=other)["FROM"] == "r.io/cms/el9:2"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".env").write_text("FROM=r.io/mine:1\n")  # a FROM of the user's is never replaced
    assert init(mine, "--base-image", "r.io/cms/el9:2").returncode == 0
    assert (mine / ".env").read_text() == "FROM=r.io/mine:1\n"


def test_the_component_templates_are_generated_from_the_scaffold():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "scripts" / "component_templates.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("engine", ["inplace", "docker"])
def test_both_documents_of_each_component_template_validate(tmp_path, engine):
    root = Path(__file__).resolve().parent.parent
    header, jobs = (root / "templates" / f"{engine}.yml").read_text().split("\n---\n")
    spec = yaml.safe_load(header)["spec"]["inputs"]
    assert set(spec) == {"base-image", "runner-tag", "package-source", "build-script",
                         "build-env", "extra-tags"}
    (tmp_path / "spec.yml").write_text(header)
    (tmp_path / "jobs.yml").write_text(jobs)
    check_schema(tmp_path / "spec.yml", tmp_path / "jobs.yml")
    used = set(re.findall(r"\$\[\[ inputs\.([a-z-]+) \]\]", jobs))
    assert used == set(spec)  # every input is used, and no job uses an undeclared one


def test_init_component_writes_the_include_form(tmp_path):
    done = init(tmp_path, "--component", "gitlab.cern.ch/cms-cloud/lwcontainer@0.3.0",
                "--base-image", "r.io/cms/el8:1", "--build-script", "ci/build.sh")
    assert done.returncode == 0, done.stderr
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    assert ci["include"] == [{"component": "gitlab.cern.ch/cms-cloud/lwcontainer/inplace@0.3.0",
                              "inputs": {"base-image": "r.io/cms/el8:1", "runner-tag": "cvmfs",
                                         "package-source": "lwcontainer==" + __version__,
                                         "build-script": "ci/build.sh",
                                         "build-env": "CMSSW_RELEASE SCRAM_ARCH ANALYSIS_DIRS "
                                                      "BUILD_JOBS"}}]
    assert ci["variables"] == {"LWC_PACKAGE_INDEX": ""}
    assert "merge_request_event" in str(ci["workflow"])
    assert os.access(tmp_path / "ci" / "build.sh", os.X_OK)
    assert os.access(tmp_path / ".gitlab" / "lwcontainer-capture.sh", os.X_OK)
    check_schema(tmp_path / ".gitlab-ci.yml")
    (tmp_path / "d").mkdir()
    assert init(tmp_path / "d", "--engine", "docker", "--component", "g.example/x/lwc@1",
                "--package-source", "git+https://g.example/x/lwc.git@v1").returncode == 0
    ci = yaml.safe_load((tmp_path / "d" / ".gitlab-ci.yml").read_text())
    assert ci["include"][0]["component"] == "g.example/x/lwc/docker@1"
    assert ci["include"][0]["inputs"]["package-source"] == "git+https://g.example/x/lwc.git@v1"
    assert "variables" not in ci
    check_schema(tmp_path / "d" / ".gitlab-ci.yml")


def test_readme_shows_the_component_include():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "component: $CI_SERVER_FQDN/" in readme and "lwcontainer init --component" in readme


@pytest.mark.parametrize("args", [(), ("--engine", "docker"),
                                  ("--matrix", "r.io/a/cc7:1", "--matrix", "r.io/a/el8:2"),
                                  ("--engine", "docker", "--matrix", "r.io/a/cc7:1")])
def test_the_scaffold_installs_into_a_venv_of_the_job(tmp_path, args):
    assert init(tmp_path, *args).returncode == 0
    text = (tmp_path / ".gitlab-ci.yml").read_text()
    assert "--break-system-packages" not in text
    assert "python3 -I -m venv /tmp/lwc-venv" in text
    assert "--python /tmp/lwc-venv/bin/python" in text
    assert "python3 -m lwcontainer" not in text  # only the venv's python runs it


def test_the_scaffolds_own_variables_are_known_settings(tmp_path):
    """No job warns unknown_setting about a variable the scaffold itself sets."""
    from structlog.testing import capture_logs

    from lwcontainer.config.sources import warn_unknown
    texts = []
    for n, args in enumerate([(), ("--engine", "docker"), ("--component", "g.example/x/l@1")]):
        (tmp_path / str(n)).mkdir()
        assert init(tmp_path / str(n), *args).returncode == 0
        texts.append((tmp_path / str(n) / ".gitlab-ci.yml").read_text())
    root = Path(__file__).resolve().parent.parent
    texts += [(root / "templates" / f"{e}.yml").read_text() for e in ("inplace", "docker")]
    names = set(re.findall(r"\bLWC_[A-Z_]+\b", "\n".join(texts)))
    assert {"LWC_RUNNER_TAG", "LWC_PACKAGE_INDEX", "LWC_BUILD_ENV"} <= names
    with capture_logs() as logs:
        warn_unknown({name: "x" for name in names})
    assert logs == []


#: pipeline kind -> (its predefined variables, does the workflow create it, is LWC_PUSH never)
PIPELINES = {
    "default branch": ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}, True, False),
    "feature branch": ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "f"}, True, True),
    "branch of an open MR": ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "f",
                              "CI_OPEN_MERGE_REQUESTS": "g/p!7"}, False, None),
    "merge request": ({"CI_PIPELINE_SOURCE": "merge_request_event",
                       "CI_MERGE_REQUEST_IID": "7"}, True, True),
    "tag": ({"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1"}, True, False),
}
EVALUATE = """
import { Utils } from %s;
const cases = JSON.parse(process.argv[1]);
console.log(JSON.stringify(cases.map(([rules, vars]) =>
    Utils.getRulesResult({cwd: ".", rules, variables: vars, argv: {}}, {}))));
"""


def gitlab_rules(cases: list) -> list[dict]:
    """GitLab's rule semantics as gitlab-ci-local 4.65.0 implements them (its own evaluator:
    it ignores workflow:rules when it runs a pipeline, so they are evaluated here directly)."""
    npm = shutil.which("npm")
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True).stdout.strip() \
        if npm else ""
    utils = Path(root) / "gitlab-ci-local" / "src" / "utils.js"
    if not utils.is_file():
        if os.environ.get("LWC_REQUIRE_DOCKER") == "1":
            pytest.fail("gitlab-ci-local is missing (scripts/testbed.sh packages installs it)")
        pytest.skip("gitlab-ci-local is not installed")
    done = subprocess.run(["node", "--input-type=module", "-e",
                           EVALUATE % json.dumps(str(utils)), json.dumps(cases)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("args", [(), ("--engine", "docker"),
                                  ("--matrix", "r.io/a/cc7:1", "--matrix", "r.io/a/el8:2"),
                                  ("--component", "g.example/x/lwcontainer@1")])
def test_each_pipeline_runs_once_and_only_the_default_branch_and_tags_push(tmp_path, args):
    assert init(tmp_path, *args).returncode == 0
    ci = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    root = Path(__file__).resolve().parent.parent
    if "include" in ci:  # the component's jobs carry the rules
        text = (root / "templates" / "inplace.yml").read_text().split("\n---\n")[1]
        ci = {**ci, **yaml.safe_load(text)}
    job_rules = {json.dumps(job["rules"]) for name, job in ci.items()
                 if isinstance(job, dict) and "rules" in job and name != "workflow"}
    assert len(job_rules) == 1  # the same rules on every job: every needs: finds its job
    rules = json.loads(job_rules.pop())
    kinds = list(PIPELINES.values())
    base = {"CI_DEFAULT_BRANCH": "main"}
    workflow = gitlab_rules([[ci["workflow"]["rules"], {**base, **v}] for v, _, _ in kinds])
    jobs = gitlab_rules([[rules, {**base, **v}] for v, _, _ in kinds])
    pipelines = zip(PIPELINES.items(), workflow, jobs, strict=True)
    for (name, (_, created, never)), flow, job in pipelines:
        assert (flow["when"] != "never") is created, name
        if created:
            assert job["when"] == "on_success", name
            assert ((job.get("variables") or {}).get("LWC_PUSH") == "never") is never, name


def test_the_jobs_and_make_image_run_python_isolated_from_the_checkout(tmp_path):
    """A job starts in the checkout, and so does 'make image': 'python -m' there would import
    the checkout's venv.py, pip/, dotenv.py or lwcontainer/ before the real ones."""
    from lwcontainer.ci import templates
    checkout = tmp_path / "checkout"
    (checkout / "lwcontainer").mkdir(parents=True)
    (checkout / "lwcontainer" / "__main__.py").write_text("raise SystemExit(43)\n")
    for name in ("dotenv.py", "venv.py", "pip.py", "ensurepip.py"):
        (checkout / name).write_text("raise SystemExit(42)\n")
    venv = str(tmp_path / "venv")
    folded = templates.VENV_LINES.replace(templates.VENV, venv).split(">-\n", 1)[1]
    made = subprocess.run(["sh", "-c", " ".join(folded.split()) + ' && $pip --version'],
                          cwd=checkout, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and made.stdout.startswith("pip "), made.stdout + made.stderr
    ran = subprocess.run(["sh", "-c", templates.LWC.replace(templates.VENV, sys.prefix)
                          + " --version"], cwd=checkout, capture_output=True, text=True,
                         timeout=60)
    assert (ran.returncode, ran.stdout) == (0, f"lwcontainer {__version__}\n"), ran.stderr
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    assert "cd $(SCRATCH) && $(PY) -I -m lwcontainer\n" in makefile
