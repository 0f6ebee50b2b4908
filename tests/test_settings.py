from pathlib import Path

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st, HealthCheck

from lwcontainer.errors import ConfigError
from lwcontainer.config.settings import SPECS, Settings
from lwcontainer.config.sources import gather


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("echo hi\n")
    return tmp_path


def make(project: Path, **env: str) -> Settings:
    return Settings.from_mapping({"FROM": "cms/base:1", **env}, cwd=project)


def test_defaults(project):
    s = make(project)
    assert str(s.from_image) == "cms/base:1"
    assert str(s.to_image) == f"lwcontainer/{project.name.lower().replace('_', '-')}:latest"
    assert s.build_script == "./.gitlab/build.sh"
    assert s.automounter_options == ("--privileged",)
    assert s.cvmfs_repos == ("cms.cern.ch",)
    assert (s.docker_timeout, s.cvmfs_timeout, s.push_retries) == (60, 300, 3)
    assert s.pull == "missing" and not s.push_enabled and s.registry is None


def test_ci_variables_make_to_and_enable_push(project):
    s = make(project, CI_REGISTRY="gitlab-registry.cern.ch", CI_REGISTRY_USER="u",
             CI_JOB_TOKEN="tok", CI_REGISTRY_IMAGE="gitlab-registry.cern.ch/me/ana",
             CI_COMMIT_SHORT_SHA="abcd1234", LWC_EXTRA_TAGS="latest, other.io/x:v1 latest")
    assert str(s.to_image) == "gitlab-registry.cern.ch/me/ana:abcd1234"
    assert [str(t) for t in s.targets] == ["gitlab-registry.cern.ch/me/ana:abcd1234",
                                           "gitlab-registry.cern.ch/me/ana:latest",
                                           "other.io/x:v1"]
    assert s.push_enabled and s.registry_password == "tok"
    assert "tok" not in repr(s)


def test_password_precedence(project):
    base = dict(CI_REGISTRY="r.io", CI_REGISTRY_USER="u")
    assert make(project, **base, CI_BUILD_TOKEN="b").registry_password == "b"
    assert make(project, **base, CI_BUILD_TOKEN="b", CI_JOB_TOKEN="j").registry_password == "j"
    both = make(project, **base, CI_REGISTRY_PASSWORD="p", CI_JOB_TOKEN="j")
    assert both.registry_password == "p"


@pytest.mark.parametrize("env, setting", [
    ({"FROM": ""}, "FROM"),
    ({"FROM": "Not/Valid"}, "FROM"),
    ({"TO": "x:y:z"}, "TO"),
    ({"LWC_EXTRA_TAGS": "ok bad$tag"}, "LWC_EXTRA_TAGS"),
    ({"CI_REGISTRY": "r.io"}, "CI_REGISTRY_USER"),
    ({"CI_REGISTRY": "r.io", "CI_REGISTRY_USER": "u"}, "CI_REGISTRY_PASSWORD"),
    ({"CI_REGISTRY": "r.io/path", "CI_REGISTRY_USER": "u", "CI_JOB_TOKEN": "t"}, "CI_REGISTRY"),
    ({"LWC_PULL": "sometimes"}, "LWC_PULL"),
    ({"LWC_DOCKER_TIMEOUT": "soon"}, "LWC_DOCKER_TIMEOUT"),
    ({"LWC_CVMFS_TIMEOUT": "-1"}, "LWC_CVMFS_TIMEOUT"),
    ({"LWC_PUSH_RETRIES": "2.5"}, "LWC_PUSH_RETRIES"),
    ({"LWC_CVMFS_REPOS": "cms.cern.ch ../etc"}, "LWC_CVMFS_REPOS"),
    ({"LWC_CVMFS_MOUNTS": "relative/dir"}, "LWC_CVMFS_MOUNTS"),
    ({"LWC_AUTOMOUNTER_NAME": "bad name"}, "LWC_AUTOMOUNTER_NAME"),
    ({"LWC_AUTOMOUNTER_OPTIONS": "--cap-add 'SYS_ADMIN"}, "LWC_AUTOMOUNTER_OPTIONS"),
    ({"LWC_BUILD_SCRIPT": "missing.sh"}, "LWC_BUILD_SCRIPT"),
    ({"LWC_BUILD_SCRIPT": "../outside.sh"}, "LWC_BUILD_SCRIPT"),
    ({"LWC_BUILD_SCRIPT": "/etc/passwd"}, "LWC_BUILD_SCRIPT"),
    ({"LWC_PROJECT_DIR": "nowhere"}, "LWC_PROJECT_DIR"),
    ({"TO": "repo\n:tag"}, "TO"),
    ({"LWC_LOG_FORMAT": "xml"}, "LWC_LOG_FORMAT"),
])
def test_bad_values_name_the_setting(project, env, setting):
    with pytest.raises(ConfigError) as info:
        make(project, **env)
    assert info.value.setting == setting
    assert str(info.value).startswith(setting + ":")


def test_build_script_symlink_out_of_project_is_refused(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "evil.sh"
    outside.write_text("echo\n")
    (project / "link.sh").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the project"):
        make(project, LWC_BUILD_SCRIPT="link.sh")


def test_sources_precedence(project):
    (project / ".env").write_text("FROM=from/dotenv:1\nTO=to/dotenv:1\nLWC_PULL=never\n"
                                  "LWC_CVMFS_TIMEOUT=7\n")
    environ = {"TO": "to/environ:1", "LWC_PULL": "always"}
    switches = {"LWC_PULL": "missing", "FROM": None}
    merged = gather(environ, switches, cwd=project)
    s = Settings.from_mapping(merged, cwd=project)
    assert str(s.from_image) == "from/dotenv:1"      # only in .env
    assert str(s.to_image) == "to/environ:1"          # environment beats .env
    assert s.pull == "missing"                        # switch beats environment
    assert s.cvmfs_timeout == 7
    assert environ == {"TO": "to/environ:1", "LWC_PULL": "always"}  # not mutated


def test_env_files_are_not_interpolated(project):
    (project / "ci.env").write_text('CI_REGISTRY_IMAGE=r.io/me/ana\nTO="${CI_JOB_TOKEN}:v2"\n')
    merged = gather({"CI_JOB_TOKEN": "s3cret"}, {}, env_file="ci.env", cwd=project)
    assert merged["TO"] == "${CI_JOB_TOKEN}:v2"  # no secret can be copied into a tag


@pytest.mark.parametrize("line,key", [
    ("LWC_AUTOMOUNTER_OPTIONS=--privileged -v /:/host", "LWC_AUTOMOUNTER_OPTIONS"),
    ("LWC_CVMFS_MOUNTS=/", "LWC_CVMFS_MOUNTS"), ("DOCKER_HOST=tcp://elsewhere:2375", "DOCKER_HOST"),
    ("LWC_CVMFS_HOST_DIR=/", "LWC_CVMFS_HOST_DIR"),
    ("CI_PROJECT_URL=https://x/y", "CI_PROJECT_URL"),
    ("LWC_ENGINE=inplace", "LWC_ENGINE"), ("LWC_REPORT=/etc/passwd", "LWC_REPORT"),
    ("LWC_EXTRA_TAGS=docker.io/someone/app:latest", "LWC_EXTRA_TAGS")])
def test_the_checkouts_env_cannot_steer_the_engine(project, line, key):
    (project / ".env").write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"^{key}:.*(environment or on the command line|bare)"):
        gather({}, {}, cwd=project)


@pytest.mark.parametrize("key,meant", [("FORM", "FROM"), ("LWC_CVMFS_TIMOUT", "LWC_CVMFS_TIMEOUT"),
                                       ("LWC_CVMFS_HOST_DIRR", "LWC_CVMFS_HOST_DIR")])
def test_a_typo_in_the_env_file_is_named_with_a_suggestion(project, key, meant):
    (project / ".env").write_text(f"{key}=x\n")
    with pytest.raises(ConfigError, match=f"^{key}: .*did you mean {meant}\\?"):
        gather({}, {}, cwd=project)


def test_every_setting_the_env_file_may_set_is_a_build_input():
    """A walk over the table: nothing that steers the engine, its address, privileges, host
    paths or where files go may come from the checkout."""
    from lwcontainer.config.settings import DOTENV_ALLOWED
    never = {"LWC_ENGINE", "LWC_PROJECT_DIR", "LWC_REPORT", "LWC_CVMFS_HOST_DIR",
             "LWC_CVMFS_MOUNTS", "LWC_INSECURE_REGISTRIES", "LWC_KEEP_LOGIN",
             "LWC_KEEP_AUTOMOUNTER", "LWC_DIND_HOST"}
    for spec in SPECS:
        if spec.variable in never or spec.variable.startswith(("CI_", "GITHUB_", "DOCKER_")) \
                or spec.variable.startswith("LWC_AUTOMOUNTER") or spec.secret:
            assert spec.variable not in DOTENV_ALLOWED, spec.variable
    assert {"FROM", "TO", "LWC_BUILD_SCRIPT", "LWC_CVMFS_REPOS"} <= DOTENV_ALLOWED


@pytest.mark.parametrize("line", ["FROM cms/base", "'unterminated=1", "A=1\nexport B C\n"])
def test_malformed_env_file_line_is_a_config_error(project, line):
    (project / ".env").write_text(line + "\n")
    with pytest.raises(ConfigError, match=r"line \d") as info:
        gather({}, {}, cwd=project)
    assert "cms/base" not in str(info.value) and "unterminated" not in str(info.value)


def test_missing_env_file_named(project):
    with pytest.raises(ConfigError, match="--env-file"):
        gather({}, {}, env_file="nope.env", cwd=project)


_nasty = st.lists(st.sampled_from(list(" ;$()`'\"\\|&<>\n\té€ab:/.-_@") + ["$(id)"]),
                  min_size=1, max_size=12).map("".join)


@hyp_settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(name=st.sampled_from(["FROM", "TO", "LWC_EXTRA_TAGS", "LWC_CVMFS_REPOS",
                             "LWC_AUTOMOUNTER_NAME", "LWC_BUILD_SCRIPT", "LWC_PULL",
                             "LWC_CVMFS_TIMEOUT", "LWC_AUTOMOUNTER_IMAGE"]),
       value=_nasty)
def test_hostile_values_are_accepted_cleanly_or_named(project, name, value):
    """Any value either validates into clean data or raises ConfigError naming its setting."""
    try:
        s = make(project, **{name: value})
    except ConfigError as exc:
        assert exc.setting in (name, "FROM")
        return
    for ref in (s.from_image, *s.targets, s.automounter_image):
        assert not any(ch in str(ref) for ch in " ;$()`'\"\\|&<>\n")


@pytest.mark.parametrize("epoch", ["99999999999999", "9" * 40])
def test_a_source_date_epoch_past_year_9999_is_exit_2(project, epoch):
    with pytest.raises(ConfigError, match="^SOURCE_DATE_EPOCH: .*9999"):
        Settings.from_mapping({"FROM": "r.io/x:1", "SOURCE_DATE_EPOCH": epoch}, cwd=project)
