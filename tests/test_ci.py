"""CI integration rules: variables in, markers / addresses / tags out (no engine needed)."""
from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from lwcontainer.ci.sections import Sections
from lwcontainer.errors import ConfigError
from lwcontainer.config.platform import github_defaults
from lwcontainer.config.reference import TAG_RE
from lwcontainer.config.tags import derived_tags, sanitise_tag
from lwcontainer.engines.docker.address import engine
from lwcontainer.ci.scaffold import Options, gitlab_ci
from lwcontainer.config.settings import Settings


# -- sections --------------------------------------------------------------------------------
def test_gitlab_sections_follow_the_documented_format():
    out = io.StringIO()
    sections = Sections("gitlab", out)
    sections.open("push", "lwcontainer: push", when=1700000000.7)
    sections.close("push", when=1700000003.2)
    sections.open("build", "lwcontainer: build", when=1700000004)
    assert out.getvalue() == (
        "\x1b[0Ksection_start:1700000000:lwc_push[collapsed=true]\r\x1b[0Klwcontainer: push\n"
        "\x1b[0Ksection_end:1700000003:lwc_push\r\x1b[0K\n"
        "\x1b[0Ksection_start:1700000004:lwc_build\r\x1b[0Klwcontainer: build\n")


def test_background_stage_sections_are_written_afterwards_with_their_times():
    out = io.StringIO()
    sections = Sections("gitlab", out)
    sections.later("pull", 1700000001.0, 1700000009.0, "pull: ok in 8.00 s")
    assert out.getvalue() == ""
    sections.flush()
    assert re.fullmatch(r"\x1b\[0Ksection_start:1700000001:lwc_pull\[collapsed=true\]\r\x1b\[0K"
                        r"lwcontainer: pull\npull: ok in 8.00 s\n"
                        r"\x1b\[0Ksection_end:1700000009:lwc_pull\r\x1b\[0K\n", out.getvalue())


def test_github_groups_and_no_markers_elsewhere():
    out = io.StringIO()
    github = Sections("github", out)
    github.open("login", "lwcontainer: login")
    github.close("login")
    assert out.getvalue() == "::group::lwcontainer: login\n::endgroup::\n"
    plain = io.StringIO()
    outside_ci = Sections(None, plain)
    outside_ci.open("login", "x")
    outside_ci.later("pull", 1.0, 2.0, "pull: ok")
    outside_ci.flush()
    assert plain.getvalue() == ""


# -- the engine ------------------------------------------------------------------------------
@pytest.mark.parametrize("env, local, expected, fragment", [
    ({}, False, {}, "not a CI job"),
    ({"CI": "true"}, True, {}, "local engine socket"),
    ({"CI": "true", "DOCKER_TLS_CERTDIR": "/certs"}, False,
     {"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1",
      "DOCKER_CERT_PATH": "/certs/client"}, "TLS"),
    ({"GITLAB_CI": "true"}, False, {"DOCKER_HOST": "tcp://docker:2375"}, "TLS disabled"),
    ({"CI": "true", "KUBERNETES_PORT": "tcp://10.0.0.1:443"}, False,
     {"DOCKER_HOST": "tcp://localhost:2375"}, "Kubernetes"),
    ({"CI": "true", "DOCKER_HOST": "tcp://mine:2375", "DOCKER_TLS_CERTDIR": "/certs"}, False,
     {"DOCKER_HOST": "tcp://mine:2375"}, "is set"),
    ({"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_CERTDIR": "/certs"}, False,
     {"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1",
      "DOCKER_CERT_PATH": "/certs/client"}, "2376"),
    ({"CI": "true", "LWC_DIND_HOST": "dind", "DOCKER_TLS_CERTDIR": "/c"}, False,
     {"DOCKER_HOST": "tcp://dind:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c/client"},
     "dind service"),
])
def test_engine_address(env, local, expected, fragment):
    found = engine(env, local_socket=local)
    assert found.env == expected and fragment in found.reason


# -- GitHub Actions --------------------------------------------------------------------------
GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": "a" * 40, "GITHUB_REPOSITORY": "CMS-Ana/Zpeak",
          "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "99",
          "GITHUB_REF_NAME": "v1.2", "GITHUB_REF_TYPE": "tag", "GITHUB_ACTOR": "me"}


def test_github_defaults():
    out = github_defaults({**GITHUB, "GITHUB_TOKEN": "ghs_x"})
    assert out == {"CI_COMMIT_SHA": "a" * 40, "CI_COMMIT_SHORT_SHA": "a" * 8,
                   "CI_PROJECT_URL": "https://github.com/CMS-Ana/Zpeak",
                   "CI_PROJECT_NAME": "Zpeak", "CI_JOB_ID": "99", "CI_COMMIT_TAG": "v1.2",
                   "CI_REGISTRY": "ghcr.io", "CI_REGISTRY_USER": "me",
                   "CI_REGISTRY_IMAGE": "ghcr.io/cms-ana/zpeak", "CI_REGISTRY_PASSWORD": "ghs_x"}
    assert "CI_REGISTRY" not in github_defaults(GITHUB)  # no token: no registry, no push
    assert github_defaults({"GITHUB_SHA": "b" * 40}) == {}


# -- tags ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, tag", [
    ("v1.2.3", "v1.2.3"), ("feature/new thing", "feature-new-thing"), ("-x", "_x"),
    (".hidden", "_hidden"), ("ü", "_"), ("a" * 200, "a" * 128),
])
def test_sanitise_tag(text, tag):
    assert sanitise_tag(text) == tag


@given(st.text(max_size=300))
def test_sanitised_tags_are_always_valid(text):
    assert TAG_RE.fullmatch(sanitise_tag(text))


@pytest.mark.parametrize("rule, branch, default, git_tag, expected", [
    ("auto", "main", "main", None, ("latest",)),
    ("auto", "feature", "main", None, ()),
    ("auto", None, "main", "v1.0/rc", ("v1.0-rc",)),
    ("always", "feature", "main", None, ("latest",)),
    ("never", "main", "main", "v1", ()),
])
def test_derived_tags(rule, branch, default, git_tag, expected):
    assert derived_tags(rule, branch, default, git_tag) == expected


def _settings(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / ".gitlab").mkdir(exist_ok=True)
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    return Settings.from_mapping({"FROM": "a", "TO": "r.io/me/ana:abc", **env}, cwd=tmp_path)


def test_targets_with_derived_tags(tmp_path):
    s = _settings(tmp_path, CI_COMMIT_BRANCH="main", CI_DEFAULT_BRANCH="main",
                  CI_COMMIT_TAG="release 1", LWC_EXTRA_TAGS="latest")
    assert [str(t) for t in s.targets] == ["r.io/me/ana:abc", "r.io/me/ana:latest",
                                           "r.io/me/ana:release-1"]


def test_created_from_source_date_epoch_then_commit_timestamp(tmp_path):
    assert _settings(tmp_path, SOURCE_DATE_EPOCH="1700000000",
                     CI_COMMIT_TIMESTAMP="2020-01-01T00:00:00Z").created == \
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert _settings(tmp_path, CI_COMMIT_TIMESTAMP="2022-01-31T16:47:55+01:00").created == \
        datetime(2022, 1, 31, 15, 47, 55, tzinfo=timezone.utc)
    assert _settings(tmp_path).created is None
    for name, value in (("SOURCE_DATE_EPOCH", "yesterday"), ("CI_COMMIT_TIMESTAMP", "soon")):
        with pytest.raises(ConfigError, match=name):
            _settings(tmp_path, **{name: value})


# -- init --matrix ---------------------------------------------------------------------------
def test_matrix_job_one_entry_per_base_image():
    job = yaml.safe_load(gitlab_ci(Options(engine="docker", matrix=(
        "r.io/cms/cc7-cms:latest", "r.io/cms/el8-cms:2024"))))
    job = job["build_image"]
    assert job["parallel"]["matrix"] == [
        {"FROM": "r.io/cms/cc7-cms:latest", "IMAGE_NAME": "cc7-cms",
         "LWC_REPORT_PREFIX": "CC7_CMS_"},
        {"FROM": "r.io/cms/el8-cms:2024", "IMAGE_NAME": "el8-cms-2024",
         "LWC_REPORT_PREFIX": "EL8_CMS_2024_"}]
    assert job["variables"]["TO"] == "$CI_REGISTRY_IMAGE/$IMAGE_NAME:$CI_COMMIT_SHORT_SHA"
    assert "FROM" not in job["variables"]
    with pytest.raises(ConfigError, match="--matrix"):
        gitlab_ci(Options(engine="docker", matrix=("a/x:1", "b/x:1")))
