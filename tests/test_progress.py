"""Long waits are never silent: periodic records off a terminal, one live line on it."""
import io
import json
import time

import structlog
from structlog.testing import capture_logs

from lwcontainer.output import logs
from lwcontainer.output.masking import Masker
from lwcontainer.output.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_periodic_waiting_records_carry_the_stage_off_a_terminal():
    log = io.StringIO()
    logs.configure("json", "info", Masker(), stream=log)
    with structlog.contextvars.bound_contextvars(stage="pull"):
        with progress("pulling x", interval=0.1, stream=io.StringIO()):
            time.sleep(0.55)
    records = [json.loads(line) for line in log.getvalue().splitlines()]
    waiting = [r for r in records if r["event"] == "waiting"]
    assert 3 <= len(waiting) <= 6
    assert all(r["stage"] == "pull" and r["what"] == "pulling x" for r in waiting)
    assert [r["elapsed_s"] for r in waiting] == sorted(r["elapsed_s"] for r in waiting)


def test_a_single_updating_line_on_a_terminal_erased_at_the_end():
    stream = Terminal()
    with capture_logs() as records:
        with progress("waiting for CVMFS", interval=10, stream=stream):
            time.sleep(0.6)
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") >= 3 and "\n" not in text
    assert "waiting for CVMFS" in text and text.endswith("\r\x1b[2K")
    assert not [r for r in records if r["event"] == "waiting"]


def test_a_short_wait_on_a_terminal_writes_nothing():
    stream = Terminal()
    with progress("waiting", interval=10, stream=stream):
        pass
    assert stream.getvalue() == ""


def test_overlapping_waits_draw_one_live_line_the_newest():
    stream = Terminal()
    with progress("pulling base", interval=10, stream=stream):
        time.sleep(0.4)
        with progress("waiting for CVMFS", interval=10, stream=stream):
            drawn_before = stream.getvalue().count("pulling base")
            time.sleep(0.6)
            inner = stream.getvalue()
    assert inner.count("pulling base") == drawn_before  # the older wait stopped drawing
    assert "waiting for CVMFS" in inner


def test_a_log_record_never_lands_on_the_live_line():
    stream = Terminal()
    logs.configure("console", "info", Masker(), stream=stream)
    with progress("pushing", interval=10, stream=stream):
        time.sleep(0.4)
        logs.get_logger().info("pushed", tag="r/x:1")
        time.sleep(0.1)
    text = stream.getvalue()
    record = text.index("pushed")
    line_start = text.rfind("\n", 0, record) + 1
    before = text[max(text.rfind("\r", 0, record), line_start - 1) + 1:record]
    assert "pushing …" not in before  # the record starts on a cleared line
    assert text[:record].endswith("\r\x1b[2K") or "\r\x1b[2K" in text[line_start:record]
