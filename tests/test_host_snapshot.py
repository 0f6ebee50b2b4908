"""The host check's snapshot (tests/test_host_e2e.py) leaves out what any engine changes on its
own, wherever its data root: checked here without bringing up a second bed."""
from __future__ import annotations

from pathlib import Path

from test_host_e2e import engine_roots, links_by_name, snapshot


def fake_proc(tmp_path: Path, *commands: list[str]) -> Path:
    for pid, argv in enumerate(commands, 100):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv)
                                                      + b"\0")
    (tmp_path / "self").mkdir()
    return tmp_path


def test_every_engines_state_directories_are_found(tmp_path):
    proc = fake_proc(tmp_path, ["/usr/bin/dockerd", "--data-root", "/srv/docker",
                                "--exec-root=/srv/run/docker"],
                     ["containerd", "--config", "/srv/run/containerd/containerd.toml"],
                     ["/usr/bin/python3", "--data-root", "/not/an/engine"])
    roots = engine_roots(proc)
    assert {"/srv/docker/", "/srv/run/docker/", "/srv/run/containerd/"} <= set(roots)
    assert "/not/an/engine/" not in roots


def test_a_snapshot_is_stable_while_the_beds_engine_runs_a_container(testbed):
    """A container of another engine (here the bed's, whose data root is not /var/lib/docker)
    starting between two snapshots changes nothing the host check compares."""
    before = snapshot()
    name = "lwc-hostsnap"
    testbed.docker("run", "-d", "--name", name, testbed["LWC_TESTBED_BUSYBOX"], "sleep", "30")
    try:
        during = snapshot()
    finally:
        testbed.docker("rm", "-f", name, check=False)
    # compared as the host check compares them (links by name, without their counters)
    assert {**during, "links": links_by_name(during["links"])} == \
        {**before, "links": links_by_name(before["links"])}
