"""What every engine shares: each stage logged (and a CI log section), the image's labels, the
report. Engines call ``Stages.stage``; nothing here decides order."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator, TextIO

from structlog.contextvars import bound_contextvars

from .ci.sections import Sections
from .config.settings import Settings
from .errors import Interrupted, LwcError
from .output import report
from .output.logs import get_logger
from .output.masking import Masker


@dataclass(frozen=True)
class Image:
    """What a build produced: ``id`` is the report's LWC_IMAGE_ID (the engine's image id, or
    the config digest where there is no engine), ``layer_size`` the bytes the build added."""

    id: str
    layer_size: int | None = None
    details: tuple[tuple[str, str], ...] = ()  # more report keys, the engine's own


class Stages:
    """Logs each stage's start and end with its outcome, inside a CI section. A stage run in a
    background thread (``background=True``) gets its section written later, by the main thread,
    with its own times: sections cannot nest across threads."""

    def __init__(self, settings: Settings, masker: Masker, out: TextIO) -> None:
        self.sections = Sections(settings.ci_style, out)
        self.masker = masker
        self.log = get_logger()

    @contextmanager
    def stage(self, name: str, background: bool = False) -> Iterator[None]:
        started, wall = time.monotonic(), time.time()
        if not background:
            self.sections.flush()
            self.sections.open(name, f"lwcontainer: {name}")
        outcome = "failed"
        with bound_contextvars(stage=name):
            self.log.info("stage_start")
            try:
                yield
                outcome = "ok"
            except Interrupted as exc:
                if exc.signal_name == "aborted":  # a step the run's end cancelled: no failure
                    outcome = "cancelled"
                    self.log.debug("stage_done", outcome=outcome)
                else:
                    self.log.error("stage_done", outcome=outcome, signal=exc.signal_name)
                raise
            except BaseException as exc:
                # The run's error is printed once, by the line that ends it ("failed"); a stage
                # names only what is not one of lwcontainer's own errors.
                self.log.error("stage_done", outcome=outcome,
                               duration_s=round(time.monotonic() - started, 3),
                               **({} if isinstance(exc, LwcError)
                                  else {"error": self.masker(str(exc))}))
                raise
            else:
                self.log.info("stage_done", outcome=outcome,
                              duration_s=round(time.monotonic() - started, 3))
            finally:
                if background:
                    self.sections.later(name, wall, time.time(), f"{name}: {outcome} in "
                                        f"{time.monotonic() - started:.2f} s")
                else:
                    self.sections.close(name)

    def skip(self, name: str, reason: str, background: bool = False) -> None:
        if background:
            self.log.info("stage_done", stage=name, outcome="skipped", reason=reason)
            self.sections.later(name, time.time(), time.time(), f"{name}: skipped ({reason})")
            return
        self.sections.flush()
        self.sections.open(name, f"lwcontainer: {name} (skipped)")
        self.log.info("stage_done", stage=name, outcome="skipped", reason=reason)
        self.sections.close(name)

    def flush(self) -> None:
        self.sections.flush()


def labels(s: Settings, base_digest: str | None) -> dict[str, str]:
    """The OCI labels every engine puts on the image."""
    out = {
        "org.opencontainers.image.created":
            (s.created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.base.name": str(s.from_image.normalized),
    }
    if s.project_url:
        out["org.opencontainers.image.source"] = s.project_url
    if s.commit_sha:
        out["org.opencontainers.image.revision"] = s.commit_sha
    if base_digest:
        out["org.opencontainers.image.base.digest"] = base_digest
    return out


def write_report(stages: Stages, s: Settings, image: Image, digest: str,
                 dry_run: bool = False) -> None:
    """The dotenv report, the last stage of every composition that publishes."""
    stages.flush()
    log = get_logger()
    with stages.stage("report"):
        result = report.Report(image=str(s.to_image), image_id=image.id, digest=digest,
                               tags=tuple(map(str, s.targets)), layer_size=image.layer_size,
                               details=image.details, prefix=s.report_prefix)
        if dry_run:
            log.info("report_planned", path=str(s.report))
            return
        result.write(s.report, s.report_root)
        log.info("report_written", path=str(s.report), image=result.image, digest=result.digest)
