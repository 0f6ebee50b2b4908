"""The commit's world-writable check against a scripted engine: the layer check container
(the build container's own layer directory, mounted read-only) where the engine names that
directory, ``docker diff`` and the committed image elsewhere, and every container it makes
removed. (tests/test_modes_e2e.py runs it on the real engines.)"""
from __future__ import annotations

import io
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from structlog.testing import capture_logs

from lwcontainer.engines.cli import EngineCli
from lwcontainer.engines.docker import modes
from lwcontainer.engines.docker.client import DockerCli
from lwcontainer.executor import Completed, Executor, Step
from lwcontainer.output.masking import Masker

UPPER = "/var/lib/docker/overlay2/0123abcd/diff"
OVERLAY = json.dumps({"Name": "overlay2", "Data": {"UpperDir": UPPER, "LowerDir": "/x"}})
VFS = json.dumps({"Name": "vfs", "Data": None})


class Scripted(Executor):
    """Answers by the argv's first two words. A gated step waits for its gate, as the check
    container does: released, it gives its answer; never released, it read nothing."""

    def __init__(self, answers: dict[str, Completed], deaf: bool = False) -> None:
        super().__init__(Masker(), backoff=0, out=io.StringIO(), err=io.StringIO())
        self.answers = answers
        self.calls: list[Step] = []
        self.parked = threading.Event()
        self.deaf = deaf  # its stdin's end does not make it exit: only its removal does
        self.removed = threading.Event()

    def run(self, step: Step) -> Completed:
        self.calls.append(step)
        if step.argv[:1] == ("rm",):
            self.removed.set()
        if isinstance(step.stdin, Future):
            self.parked.set()
            while not step.stdin.done():
                threading.Event().wait(0.01)
            if step.stdin.cancelled():
                if self.deaf:
                    self.removed.wait(10)
                    return Completed(137, "", "")
                return Completed(0, "", "")
            assert step.stdin.result() == modes.GO + "\n"
        answer = self.answers.get(" ".join(step.argv[:2]), Completed(0, "", ""))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def kinds(self) -> list[str]:
        return [" ".join(step.argv[:2]) for step in self.calls]


class Interrupting(RuntimeError):
    """An answer that fails inside the engine's call."""


def check(*, build_ok: bool = True, deaf: bool = False,
          **answers: Completed) -> tuple[list[str], Scripted, list[dict]]:
    x = Scripted({"container inspect": Completed(0, OVERLAY + "\n", ""), **answers}, deaf)
    docker = DockerCli(x, EngineCli(program="docker", title="Docker engine"), {})
    running: Future[None] = Future()
    with capture_logs() as logs, ThreadPoolExecutor(2) as pool:
        with modes.LayerCheck(docker, "lwc-build", "cms/base:1", pool, after=running) as layer:
            threading.Event().wait(0.05)
            assert x.calls == []  # nothing on the way of the build container's start
            running.set_result(None)
            for _ in range(500):  # started while the build runs, waiting for its release
                if x.parked.is_set() or layer.ran.done():
                    break
                threading.Event().wait(0.01)
            if build_ok:
                layer.release()
                hits = modes.warn_world_writable(docker, "lwc-build", "sha256:new", layer)
            else:
                hits = []
    return hits, x, [e for e in logs if e["event"] == "world_writable"]


def test_the_layer_check_reads_the_build_containers_own_layer_and_nothing_else():
    said = f"./home/cmsusr/a b.txt\0./home/cmsusr/new\nline\0./home/cmsusr/dir\0{modes.END}0\n"
    hits, x, warned = check(**{"start --attach": Completed(0, said, "")})
    assert hits == ["/home/cmsusr/a b.txt", "/home/cmsusr/dir", "/home/cmsusr/new\nline"]
    assert warned[0]["paths"] == hits and warned[0]["count"] == 3
    assert x.kinds() == ["container inspect", "create --rm", "start --attach"]  # --rm: gone
    create, start = x.calls[1].argv, x.calls[2]
    assert "--interactive" in create and "--interactive" in start.argv  # its stdin: the gate
    assert isinstance(start.stdin, Future)
    assert f"{UPPER}:{modes.LAYER}:ro" in create and "cms/base:1" in create
    assert create[create.index("--network") + 1] == "none"
    assert create[create.index("--user") + 1] == "0:0"
    assert "lwcontainer.role=build" in create  # an orphan of a killed run is found and removed


def test_nothing_world_writable_is_an_answer_too():
    hits, x, warned = check(**{"start --attach": Completed(0, f"{modes.END}0\n", "")})
    assert hits == [] and warned == [] and "diff lwc-build" not in x.kinds()


def name_of(create: Step) -> str:
    return create.argv[create.argv.index("--name") + 1]


def test_a_check_never_released_ends_on_its_stdin_reading_nothing():
    _, x, _ = check(build_ok=False)
    assert x.kinds() == ["container inspect", "create --rm", "start --attach"]  # --rm: gone
    assert x.calls[2].stdin.cancelled()  # its stdin ended without the word to go


def test_a_check_that_does_not_end_on_its_stdin_is_removed_once():
    _, x, _ = check(build_ok=False, deaf=True)
    assert x.kinds() == ["container inspect", "create --rm", "start --attach", "rm --force"]
    assert x.calls[3].argv[-1] == name_of(x.calls[1])


def test_a_check_that_could_not_start_is_removed_on_exit():
    _, x, _ = check(**{"start --attach": Completed(125, "", "cannot start"),
                       "diff lwc-build": Completed(0, "", "")})
    removed = [step.argv[-1] for step in x.calls if step.argv[:2] == ("rm", "--force")]
    assert removed == [name_of(x.calls[1])]


@pytest.mark.parametrize("answers", [
    {"container inspect": Completed(0, VFS, "")},                         # vfs: no layer dir
    {"start --attach": Completed(0, "./x\0", "")},                        # find cut short
    {"start --attach": Completed(0, f"{modes.END}1\n", "")},              # find failed
    {"start --attach": Completed(126, "", "exec: /bin/sh: not found")},
])
def test_where_the_layer_check_cannot_tell_the_diff_and_the_image_do(answers):
    """The image check is the committed image's own: no unconfined SELinux label for it."""
    hits, x, warned = check(**answers, **{
        "diff lwc-build": Completed(0, "C /home\nA /home/f\nD /gone\n", ""),
        "run --rm": Completed(0, "/home/f\n/not-in-the-layer\n", "")})
    assert hits == ["/home/f"] and warned[0]["paths"] == ["/home/f"]
    run = next(step for step in x.calls if step.argv[:2] == ("run", "--rm"))
    assert run.stdin == "/home\n/home/f\n" and "sha256:new" in run.argv
    assert run.argv[run.argv.index("--network") + 1] == "none"
    assert "label=disable" not in run.argv


@pytest.mark.parametrize("text, expected", [
    (OVERLAY, UPPER), (VFS, None), ("null", None), ("not json", None),
    (json.dumps({"Data": {"UpperDir": "relative/dir"}}), None), ("[]", None)])
def test_the_layer_directory_is_read_from_the_engines_own_word(text, expected):
    assert modes.upper_dir(text) == expected


def test_the_layer_checks_own_output_is_read_only_when_its_find_finished():
    assert modes.found_in_layer(f"./a\0./b c\0{modes.END}0\n") == ["/a", "/b c"]
    assert modes.found_in_layer(f"{modes.END}0\n") == []
    assert modes.found_in_layer(f"./a\0{modes.END}1\n") is None
    assert modes.found_in_layer("./a\0") is None and modes.found_in_layer("") is None


def test_an_answer_that_raises_is_no_answer_and_the_other_way_tells():
    hits, _, _ = check(**{"start --attach": Interrupting(),
                          "diff lwc-build": Completed(0, "A /f\n", ""),
                          "run --rm": Completed(0, "/f\n", "")})
    assert hits == ["/f"]
