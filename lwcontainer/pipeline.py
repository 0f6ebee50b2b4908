"""The order of the stages, and what overlaps: nothing else. Each composition takes an engine
(see ``lwcontainer.engines``) and works the same for every engine.

whole job:  connect > workspace (prepare) > build > commit > publish (measuring meanwhile)
            > release workspace > report
publish:    connect > the image built earlier > publish > report

Whatever runs a process to clean up (the workspace's release, the connection's end) runs on the
main thread, where signals arrive and ``signals.deferred`` holds them until it is done. A
background thread measures the image beside the publish (and the engine may let go there of
what has served, such as the build container); a run cut short waits for it before cleaning up.
"""
from __future__ import annotations

import sys
from concurrent.futures import Future, wait
from typing import TextIO

from . import signals
from .config.settings import Settings
from .engines import Engine
from .errors import PushError
from .output.logs import get_logger
from .pools import pool
from .stages import Image, Stages, write_report


def whole_job(engine: Engine, stages: Stages, settings: Settings, dry_run: bool) -> Image:
    with engine.connect():
        with engine.workspace():  # released on leaving, on this (the main) thread
            engine.build()
            image = engine.commit()
            background = pool(dry_run, "lwc-measure")
            measured: Future | None = None
            try:
                with signals.deferred():  # a signal now still finds it to wait for
                    measured = background.submit(engine.measure, image)
                digest = _publish(engine, stages, settings, image, (measured,), dry_run)
            finally:
                background.shutdown(wait=False)
                if measured is not None:  # however the run ends, it is done before cleanup
                    image = _settle(measured, image)
    write_report(stages, settings, image, digest, dry_run)
    _built(settings, image, digest)
    return image


def publish_only(engine: Engine, stages: Stages, settings: Settings, dry_run: bool) -> Image:
    """'lwcontainer push' / 'publish': publish an image built earlier, write the report."""
    with engine.connect():
        image = engine.built()
        digest = _publish(engine, stages, settings, image, (), dry_run)
    write_report(stages, settings, image, digest, dry_run)
    _built(settings, image, digest)
    return image


def _publish(engine: Engine, stages: Stages, settings: Settings, image: Image,
             pending: tuple[Future, ...], dry_run: bool) -> str:
    """Publish; a failed push still writes the report (it names the image that is kept)."""
    try:
        return engine.publish(image)
    except PushError:
        if pending:
            image = _settle(*pending, image)
        write_report(stages, settings, image, "", dry_run)
        raise
    except BaseException:
        with signals.deferred():
            wait(pending)
        raise


def _settle(measured: Future, image: Image) -> Image:
    """The measured image, once the measurement is done; the image as it was if it failed."""
    with signals.deferred():
        wait((measured,))
    return measured.result() if measured.exception() is None else image


def _built(settings: Settings, image: Image, digest: str, stream: TextIO | None = None) -> None:
    """The last word: a ``built`` record, and on a terminal one plain line."""
    tags = [str(t) for t in settings.targets] if digest else "local only"
    get_logger().info("built", image=str(settings.to_image), image_id=image.id,
                      layer_size=image.layer_size, digest=digest or None, tags=tags,
                      report=str(settings.report))
    stream = stream or sys.stderr
    if stream.isatty():
        size = "" if image.layer_size is None else f", layer {image.layer_size:,} bytes"
        where = f"pushed {', '.join(tags)}" if digest else "local only (not pushed)"
        stream.write(f"built {settings.to_image} ({image.id[:19]}{size}): {where}; "
                     f"report {settings.report}\n")
        stream.flush()
