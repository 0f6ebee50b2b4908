"""The one list of the job's secret variables."""
from lwcontainer.config.secrets import (is_secret_name, secret_names, secret_values,
                                        shell_case_pattern)


def test_job_secrets_and_rule():
    for name in ("CI_JOB_TOKEN", "CI_REPOSITORY_URL", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT_V2",
                 "CI_DEPLOY_PASSWORD", "MY_api_token", "AWS_SECRET_ACCESS_KEY"):
        assert is_secret_name(name), name
    for name in ("CI_COMMIT_SHA", "HOME", "LWC_SECRET_VARIABLES", "CI_REGISTRY_USER"):
        assert not is_secret_name(name), name


def test_user_names_and_values():
    env = {"LWC_SECRET_VARIABLES": "EOS_KEYTAB, GRID_PROXY", "EOS_KEYTAB": "abcdef",
           "GRID_PROXY": "xy", "HOME": "/root", "CI_JOB_TOKEN": "tok-123"}
    assert secret_names(env) == ("CI_JOB_TOKEN", "EOS_KEYTAB", "GRID_PROXY")
    assert secret_values(env) == {"CI_JOB_TOKEN": "tok-123", "EOS_KEYTAB": "abcdef"}


def test_shell_pattern_names_every_rule():
    pattern = shell_case_pattern()
    assert "CI_REPOSITORY_URL" in pattern and "CI_JOB_JWT*" in pattern and "*TOKEN*" in pattern
