"""Choosing where /cvmfs comes from (pure: a host directory stands in for /cvmfs)."""
from pathlib import Path

import pytest

from lwcontainer.engines.docker.cvmfs import choose_source
from lwcontainer.errors import ConfigError
from lwcontainer.config.settings import Settings


@pytest.fixture
def host_cvmfs(tmp_path: Path) -> Path:
    root = tmp_path / "cvmfs"
    (root / "cms.cern.ch").mkdir(parents=True)
    (root / "cms.cern.ch" / "cmsset_default.sh").write_text("")
    (root / "empty.cern.ch").mkdir()
    return root


def settings(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / "p" / ".gitlab").mkdir(parents=True, exist_ok=True)
    (tmp_path / "p" / ".gitlab" / "build.sh").write_text("true\n")
    return Settings.from_mapping({"FROM": "a", **env}, cwd=tmp_path / "p")


def test_auto_takes_the_host_when_every_repository_is_there(tmp_path, host_cvmfs):
    s = settings(tmp_path, LWC_CVMFS_HOST_DIR=str(host_cvmfs))
    assert choose_source(s, None)[0] == "host"
    assert choose_source(s, "unix:///run/docker.sock")[0] == "host"


def test_auto_falls_back_to_the_automounter_for_a_remote_engine(tmp_path, host_cvmfs):
    """A CI job with /cvmfs of its own, talking to a dind service it found."""
    s = settings(tmp_path, LWC_CVMFS_HOST_DIR=str(host_cvmfs))
    source, reason = choose_source(s, "tcp://docker:2376")
    assert source == "automounter" and "remote" in reason


def test_auto_falls_back_to_the_automounter_without_a_host_cvmfs(tmp_path):
    s = settings(tmp_path)
    if any((Path(s.cvmfs_host_dir) / r).is_dir() for r in s.cvmfs_repos):
        pytest.skip("this host has a CVMFS of its own")
    source, reason = choose_source(s, None)
    assert source == "automounter" and "cms.cern.ch" in reason


@pytest.mark.parametrize("where, repos, says", [
    ("HOST", "cms.cern.ch empty.cern.ch", "does not hold empty.cern.ch"),  # empty: not there
    ("HOST", "cms.cern.ch grid.cern.ch", "does not hold grid.cern.ch"),
    ("/nonexistent/cvmfs", "cms.cern.ch", "does not exist on this host"),
    ("HOST/cms.cern.ch", "cms.cern.ch", "is a repository itself"),
])
def test_a_wrong_host_directory_the_user_named_is_exit_2_never_the_automounter(
        tmp_path, host_cvmfs, where, repos, says):
    where = where.replace("HOST", str(host_cvmfs))
    s = settings(tmp_path, LWC_CVMFS_HOST_DIR=where, LWC_CVMFS_REPOS=repos)
    with pytest.raises(ConfigError) as raised:
        choose_source(s, None)
    assert raised.value.exit_code == 2 and raised.value.setting == "LWC_CVMFS_HOST_DIR"
    assert str(raised.value).startswith(f"LWC_CVMFS_HOST_DIR: {where} {says}")


@pytest.mark.parametrize("mode", ["automounter", "host", "none"])
def test_explicit_mode_wins(tmp_path, mode):
    assert choose_source(settings(tmp_path, LWC_CVMFS=mode), None)[0] == mode
