"""The commit's world-writable check, its order of calls against a scripted engine: one
container in the common case, the layer's own entries only, a fallback where the image's find
or the engine's inspect cannot tell. (tests/test_modes_e2e.py runs it on the real engines.)"""
from __future__ import annotations

import io
import json

import pytest
from structlog.testing import capture_logs

from lwcontainer.engines.cli import EngineCli
from lwcontainer.engines.docker import modes
from lwcontainer.engines.docker.client import DockerCli
from lwcontainer.executor import Completed, Executor, Step
from lwcontainer.output.masking import Masker

STARTED = json.dumps("2026-11-30T09:01:08.987654321Z")
EPOCH = "1796029268.987654321"  # 2026-11-30T09:01:08.987654321Z


class Scripted(Executor):
    def __init__(self, answers: dict[str, Completed]) -> None:
        super().__init__(Masker(), backoff=0, out=io.StringIO(), err=io.StringIO())
        self.answers = answers
        self.calls: list[Step] = []

    def run(self, step: Step) -> Completed:
        self.calls.append(step)
        key = "run" if step.argv[0] == "run" else " ".join(step.argv[:2])
        if key == "run":
            key = "recent" if modes.RECENT in step.argv else "of_paths"
        return self.answers[key]

    def kinds(self) -> list[str]:
        return [" ".join(step.argv[:2]) for step in self.calls]


def check(driver: str = "vfs", **answers: Completed) -> tuple[list[str], Scripted, list[dict]]:
    x = Scripted({"container inspect": Completed(0, STARTED + "\n", ""), **answers})
    docker = DockerCli(x, EngineCli(program="docker", title="Docker engine"), {})
    with capture_logs() as logs:
        hits = modes.warn_world_writable(docker, "lwc-build", "sha256:new", driver)
    return hits, x, [e for e in logs if e["event"] == "world_writable"]


def test_nothing_recent_and_world_writable_is_the_answer_without_a_diff():
    hits, x, warned = check(recent=Completed(0, f"{modes.END}0\n", ""))
    assert hits == [] and warned == []
    assert x.kinds() == ["container inspect", "run --rm"]
    run = x.calls[1].argv
    assert run[-1] == EPOCH and "--network" in run and run[run.index("--user") + 1] == "0:0"


def test_on_overlay_what_changed_since_the_build_started_is_the_layer():
    hits, x, warned = check("overlay2", recent=Completed(0, f"/b\n/a\n{modes.END}0\n", ""))
    assert hits == ["/a", "/b"] and warned[0]["paths"] == hits
    assert x.kinds() == ["container inspect", "run --rm"]


def test_where_the_driver_copies_the_base_only_the_layers_entries_are_named():
    recent = "/opt/base-shared.txt\n/home/cmsusr/a b.txt\n/home/cmsusr/dir\n"
    hits, x, warned = check(recent=Completed(0, recent + f"{modes.END}0\n", ""),
                            **{"diff lwc-build": Completed(0, "C /home\nC /home/cmsusr\nA "
                               "/home/cmsusr/a b.txt\nA /home/cmsusr/dir\nD /gone\n", "")})
    assert hits == ["/home/cmsusr/a b.txt", "/home/cmsusr/dir"]
    assert warned[0]["paths"] == hits and warned[0]["count"] == 2
    assert "of_paths" not in [s.argv[0] for s in x.calls]


@pytest.mark.parametrize("recent", [
    Completed(0, f"{modes.END}1\n", ""),      # a find without -newerct (busybox)
    Completed(0, "/x\n", ""),                 # cut short: no end line
    Completed(127, "", "exec: /bin/sh: not found"),
])
def test_a_find_that_cannot_tell_falls_back_to_the_diffs_paths(recent):
    hits, x, warned = check(recent=recent,
                            **{"diff lwc-build": Completed(0, "C /home\nA /home/f\n", ""),
                               "of_paths": Completed(0, "/home/f\n", "")})
    assert hits == ["/home/f"] and warned[0]["paths"] == ["/home/f"]
    assert x.calls[-1].stdin == "/home\n/home/f\n"


def test_no_start_time_falls_back_without_the_recent_check():
    hits, x, _ = check(**{"container inspect": Completed(0, json.dumps("0001-01-01T00:00:00Z"),
                                                         ""),
                          "diff lwc-build": Completed(0, "A /f\n", ""),
                          "of_paths": Completed(0, "", "")})
    assert hits == [] and x.kinds() == ["container inspect", "diff lwc-build", "run --rm"]


@pytest.mark.parametrize("text, expected", [
    ('"2026-11-30T09:01:08.987654321Z"', "1796029268.987654321"),     # docker
    ('"2026-11-30T10:01:08.1+01:00"', "1796029268.1"),                # podman, a local zone
    ('"2026-11-30T09:01:08Z"', "1796029268"),
    ('"0001-01-01T00:00:00Z"', None), ('"yesterday"', None), ("not json", None), ("3", None),
])
def test_the_start_time_is_read_to_the_last_digit(text, expected):
    assert modes.epoch_time(text) == expected
