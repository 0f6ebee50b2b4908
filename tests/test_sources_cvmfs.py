"""Choosing where /cvmfs comes from (pure: a host directory stands in for /cvmfs)."""
from pathlib import Path

import pytest

from lwcontainer.engines.docker.cvmfs import choose_source
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


@pytest.mark.parametrize("env, address, fragment", [
    ({"LWC_CVMFS_REPOS": "cms.cern.ch empty.cern.ch"}, None, "empty.cern.ch"),  # empty: not there
    ({"LWC_CVMFS_REPOS": "cms.cern.ch grid.cern.ch"}, None, "grid.cern.ch"),
    # A CI job with /cvmfs of its own, talking to a dind service it found: the engine is remote.
    ({}, "tcp://docker:2376", "remote"),
])
def test_auto_falls_back_to_the_automounter(tmp_path, host_cvmfs, env, address, fragment):
    s = settings(tmp_path, LWC_CVMFS_HOST_DIR=str(host_cvmfs), **env)
    source, reason = choose_source(s, address)
    assert source == "automounter" and fragment in reason


@pytest.mark.parametrize("mode", ["automounter", "host", "none"])
def test_explicit_mode_wins(tmp_path, mode):
    assert choose_source(settings(tmp_path, LWC_CVMFS=mode), None)[0] == mode
