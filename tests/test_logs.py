import io
import json

import structlog
from structlog.testing import capture_logs

from lwcontainer.output import logs
from lwcontainer.output.masking import MASK, Masker


def test_masker_masks_nested_values_longest_first():
    m = Masker(["abc", "abcdef", None, ""])
    assert m("x abcdef y abc") == f"x {MASK} y {MASK}"
    assert m({"k": ["abc", ("abcdef",)], "n": 3}) == {"k": [MASK, (MASK,)], "n": 3}


def test_json_log_lines_are_masked_and_carry_stage_context():
    stream = io.StringIO()
    logs.configure("json", "info", Masker(["s3cr3t"]), stream=stream)
    with structlog.contextvars.bound_contextvars(stage="login"):
        logs.get_logger().info("stage_done", error="token s3cr3t refused", duration_s=1.5)
    logs.get_logger().debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "stage_done" and record["stage"] == "login"
    assert record["error"] == f"token {MASK} refused"
    assert record["level"] == "info" and record["timestamp"].endswith("Z")
    assert "s3cr3t" not in stream.getvalue()


def test_console_rendering_masks_exceptions_too():
    stream = io.StringIO()
    logs.configure("console", "info", Masker(["s3cr3t"]), stream=stream)
    try:
        raise RuntimeError("bad s3cr3t")
    except RuntimeError:
        logs.get_logger().exception("boom")
    assert "bad " + MASK in stream.getvalue() and "s3cr3t" not in stream.getvalue()


def test_capture_logs_sees_events():
    with capture_logs() as captured:
        logs.get_logger().info("engine_ready", version="20.10")
    assert captured == [{"event": "engine_ready", "version": "20.10", "log_level": "info"}]
