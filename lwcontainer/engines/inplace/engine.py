"""The in-place engine (LWC_ENGINE=inplace): no Docker engine, no privileges.

The build runs in the CI job's own container, whose image is FROM and which the runner gives
/cvmfs (the way kaniko runs RUN steps): the capture script records the root filesystem, runs
the build script and writes the changes as one layer. Publishing needs no engine: FROM's
manifest and config come from its registry, the layer is appended, and layer, config and
manifest are pushed through the registry API.

Stages: capture (build), commit (assemble the image), push, report. The capture is either the
first job of a two-job pipeline (``bash .gitlab/lwcontainer-capture.sh`` in FROM, then
``lwcontainer publish``), or, where FROM has a Python lwcontainer runs on, part of one job.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Mapping

from . import capture
from .artifact import Layer
from .image import assemble
from .publish import Publisher
from ...config.reference import InvalidReference, parse
from ...config.secrets import USER_SECRETS, secret_names
from ...config.settings import Settings
from ...errors import BuildError, ConfigError
from ...executor import TIMED_OUT, Executor, Step, child_environment
from ...output.logs import get_logger
from ...output.progress import progress
from ...stages import Image, Stages, labels


class InplaceEngine:
    SUBCOMMANDS: frozenset[str] = frozenset()  # no single stages: 'lwcontainer', 'publish'

    def __init__(self, settings: Settings, executor: Executor, stages: Stages,
                 environ: Mapping[str, str]) -> None:
        self.s = settings
        self.x = executor
        self.stages = stages
        self.log = get_logger()
        self.env = child_environment(environ, {"LWC_BUILD_SCRIPT": settings.build_script,
                                               "LWC_BUILD_ENV": " ".join(settings.build_env)},
                                     settings.secret_variables)
        # The one child that gets the job's secrets: the capture runs the build with env -i
        # (LWC_BUILD_ENV names only, never a secret) and searches the layer for their values,
        # as the capture job of the two-job pipeline does with the variables CI gives it.
        user = {USER_SECRETS: " ".join(settings.secret_variables)} \
            if settings.secret_variables else {}
        self.capture_env = {**self.env, **user, **{
            name: environ[name] for name in secret_names({**environ, **user})}}
        self.image = None
        self.layer = None

    @property
    def publisher(self) -> Publisher:
        if self.s.from_image is None:
            raise ConfigError("FROM", "not set: the in-place engine publishes onto FROM's "
                                      "layers, so it needs FROM in the publish job too")
        if not hasattr(self, "_publisher"):
            self._publisher = Publisher(self.s, backoff=self.x.backoff)
        return self._publisher

    def connect(self) -> ContextManager[None]:
        return nullcontext()

    def workspace(self) -> ContextManager[None]:
        return nullcontext()

    def build(self) -> None:
        """The capture, here and now: this process must be running in FROM."""
        with self.stages.stage("capture"):
            done = self.x.run(self.capture_step())
            if done.ok:
                return
            if done.returncode == TIMED_OUT and self.s.build_timeout:
                raise BuildError(self.x.failure_message(self.capture_step(), done))
            raise BuildError(f"the capture of build script {self.s.build_script} exited "
                             f"with code {done.returncode}: {self.x.masker(done.stderr[-600:])}"
                             .rstrip(": "))

    def capture_step(self) -> Step:
        """The generated capture script, run by bash here; LWC_BUILD_TIMEOUT bounds it (the
        executor stops its whole process group: the build and the capture's own tools)."""
        return Step(("-c", capture.render(self.s.build_script), "lwcontainer-capture"),
                    program="bash", env=self.capture_env, cwd=str(self.s.project_dir),
                    stream=True,
                    check=False, what="capture", timeout=self.s.build_timeout,
                    timeout_setting="LWC_BUILD_TIMEOUT",
                    shown=f"bash {capture.SCRIPT_PATH} (generated; LWC_BUILD_SCRIPT="
                          f"{self.s.build_script})")

    def commit(self) -> Image:
        """The new image's config and manifest: FROM's, plus the captured layer."""
        with self.stages.stage("commit"):
            if self.x.dry_run:
                self.log.info("image_planned", layer=str(self.s.project_dir))
                return Image("sha256:<config-digest>")
            layer = Layer.read(self.s.project_dir)
            self.same_base(layer)
            base = self.publisher.base(layer)
            self.same_base(layer, base.digest)
            self.image = assemble(base, layer, labels(self.s, base.digest))
            self.layer = layer
            self.log.info("image_assembled", image_id=self.image.config_digest,
                          layers=len(self.image.layers), layer=layer.digest)
            return Image(self.image.config_digest, layer.uncompressed_size)

    def same_base(self, layer: Layer, resolved: str | None = None) -> None:
        """Refuse a layer captured in another image than FROM (the capture job's ``image:``
        and the publish job's FROM disagree): it would go onto a base it was not built on.
        Names are compared as docker completes them; a capture in an image pinned by digest
        is compared by digest (with FROM's, or with what FROM resolved to: ``resolved``). A
        tag that moved between the two jobs is the same name: FROM pinned by digest
        (``name:tag@sha256:…``) makes both jobs use one image."""
        if not layer.captured_in:
            return
        try:
            captured = parse(layer.captured_in).normalized
        except InvalidReference:
            captured = None
        wanted = self.s.from_image.normalized
        if captured is not None and captured.digest:
            if captured.digest in (wanted.digest, resolved):
                return
            if wanted.digest is None and resolved is None:
                return   # told once FROM is resolved
        elif captured == wanted:
            return
        raise ConfigError("FROM", f"the layer was captured in {layer.captured_in!r} (the "
                                  f"capture job's image) and FROM is {self.s.from_image}"
                                  f"{f' ({resolved})' if resolved else ''}: it would be "
                                  "published onto another base than the one it was built in; "
                                  "nothing was uploaded. Give both jobs the same FROM (the "
                                  "capture job's image: is $FROM)")

    def measure(self, image: Image) -> Image:
        return image  # the capture measured it

    def publish(self, image: Image) -> str:
        if not self.s.push_enabled:
            self.stages.skip("push", f"{self.s.no_push_reason}: the in-place engine has no "
                                     "local image store; the layer stays in "
                                     f"{self.s.project_dir}")
            return ""
        with self.stages.stage("push"), progress("pushing", self.s.progress_interval):
            if self.x.dry_run:
                return ""
            return self.publisher.push(self.image, self.layer, self.s.push_retries)

    def built(self) -> Image:
        """'lwcontainer publish': the layer the capture job left in the project directory."""
        return self.commit()
