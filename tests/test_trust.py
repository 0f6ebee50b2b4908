"""Issue 17, checkout trust and the smaller findings: one test each, engine-free. What the
checkout, its .env, the build and a committed report cannot make lwcontainer do, and which
variables are the job's secrets everywhere. The real-engine ones are in test_trust_e2e.py."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from plumbum import local

from lwcontainer import cli, pipeline
from lwcontainer.config.settings import SPEC_BY_NAME, Settings
from lwcontainer.engines.docker.engine import DockerEngine
from lwcontainer.engines.inplace.engine import InplaceEngine
from lwcontainer.errors import ConfigError
from lwcontainer.executor import Executor
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Stages

from test_orchestration import Recorder

TOKEN = "glcbt-64_job-token-value-0123"
#: The job's secrets under names that do not say so, and the user's own.
INNOCENT = {
    "CI_REPOSITORY_URL": f"https://gitlab-ci-token:{TOKEN}@gitlab.example.org/me/ana.git",
    "DOCKER_AUTH_CONFIG": json.dumps({"auths": {"r.example.org": {
        "auth": "dXNlcjpkb2NrZXItYXV0aC1wYXNzd29yZA=="}}}),  # user:docker-auth-password
    "CI_JOB_JWT_V2": "eyJhbGciOiJSUzI1NiJ9.jwt-payload.jwt-signature",
    "EOS_KEYTAB": "keytab-bytes-of-the-user",
}


def secret_env(**more: str) -> dict[str, str]:
    return {"CI_JOB_TOKEN": TOKEN, **INNOCENT, "LWC_SECRET_VARIABLES": "EOS_KEYTAB", **more}


# -- M6: the job's secret variables, one list, everywhere --------------------------------------
def test_m6_every_secret_variable_is_masked_in_what_lwcontainer_prints(project, monkeypatch,
                                                                      capsys):
    values = [*INNOCENT.values(), "docker-auth-password", "dXNlcjpkb2NrZXItYXV0aC1wYXNzd29yZA=="]

    def broken(engine, stages, settings, dry_run):
        raise RuntimeError("bug near " + " and ".join(values))

    monkeypatch.setattr(pipeline, "whole_job", broken)
    with local.env(FROM="r.io/x:1", LWC_LOG_FORMAT="json", HOME=str(project), **secret_env()):
        monkeypatch.chdir(project)
        monkeypatch.setattr(os, "environ", dict(local.env))
        code = cli.main(["--dry-run"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1 and "internal_error" in text
    for value in values:
        assert value not in text, value


def test_m6_no_secret_variable_reaches_a_child(project):
    environ = {"PATH": "/usr/bin", "HOME": str(project), "KEEP_ME": "1", **secret_env()}
    s = Settings.from_mapping({"FROM": "r.io/x:1", **environ}, cwd=project)
    docker = DockerEngine(s, Recorder({}), Stages(s, Masker(), io.StringIO()), environ,
                          local_socket=Path("/nonexistent"))
    inplace = InplaceEngine(s, Executor(Masker()), Stages(s, Masker(), io.StringIO()), environ)
    for env in (docker.docker.env, docker.user_docker.env, inplace.env):
        assert env["KEEP_ME"] == "1"
        leaked = sorted(set(secret_env()) - {"LWC_SECRET_VARIABLES"} & set(env))
        assert leaked == []


@pytest.mark.parametrize("name", ["CI_REPOSITORY_URL", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT_V2",
                                  "EOS_KEYTAB"])
def test_m6_build_env_refuses_secrets_under_innocent_names(project, name):
    with pytest.raises(ConfigError, match=f"^LWC_BUILD_ENV: {name} holds a secret"):
        Settings.from_mapping({"FROM": "r.io/x:1", **secret_env(), "LWC_BUILD_ENV": name},
                              cwd=project)


def test_m6_build_env_refuses_a_variable_whose_value_contains_a_secret(project):
    env = secret_env(GIT_REMOTE=f"https://me:{TOKEN}@git.example.org/x.git",
                     LWC_BUILD_ENV="GIT_REMOTE")
    with pytest.raises(ConfigError, match="^LWC_BUILD_ENV: GIT_REMOTE contains the value of "
                                          "CI_JOB_TOKEN"):
        Settings.from_mapping({"FROM": "r.io/x:1", **env}, cwd=project)


def test_m6_a_users_secret_never_becomes_a_tag(project):
    env = secret_env(TO="r.io/me/ana:keytab-bytes-of-the-user")
    with pytest.raises(ConfigError, match="^TO: contains the value of a secret"):
        Settings.from_mapping({"FROM": "r.io/x:1", **env}, cwd=project)


def test_m6_secret_variables_is_a_setting_the_checkout_cannot_set(project):
    spec = SPEC_BY_NAME["LWC_SECRET_VARIABLES"]
    assert not spec.dotenv and not spec.secret
    (project / ".env").write_text("FROM=r.io/x:1\nLWC_SECRET_VARIABLES=\n")
    from conftest import lwc
    done = lwc("--dry-run", cwd=project)
    assert done.returncode == 2 and "LWC_SECRET_VARIABLES" in done.stderr
    with pytest.raises(ConfigError, match="^LWC_SECRET_VARIABLES: 'A-B' is not a variable name"):
        Settings.from_mapping({"FROM": "r.io/x:1", "LWC_SECRET_VARIABLES": "OK_NAME A-B"},
                              cwd=project)
