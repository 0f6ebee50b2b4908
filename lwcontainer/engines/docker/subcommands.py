"""The docker engine's single-stage subcommands, as compositions of its stages: 'lwcontainer
login', 'automount', 'build', 'commit' and 'run' (the whole job and 'push' are the engine-neutral
compositions of lwcontainer.pipeline)."""
from __future__ import annotations

from contextlib import ExitStack

from . import commands
from .buildcontainer import BuildContainer
from .engine import DockerEngine
from .failures import pull_failure, worth_retrying_pull
from ...errors import ConfigError
from ...output import report
from ...stages import Image


def login_only(engine: DockerEngine) -> None:
    """'lwcontainer login': into the user's docker config, where it stays."""
    engine.use_user_login()
    engine.wait_daemon()
    engine.login()


def automount(engine: DockerEngine) -> None:
    """'lwcontainer automount': start (or reuse) the automounter, wait for CVMFS, leave it."""
    engine.wait_daemon()
    engine.check_cvmfs_source("automounter", "'lwcontainer automount'")
    engine.pull()
    automounter = engine.automounter()
    with engine.stages.stage("automounter"):
        automounter.ensure()
    engine.wait_cvmfs(automounter, str(engine.s.from_image))


def build_only(engine: DockerEngine) -> str:
    """'lwcontainer build': keep the stopped build container for 'commit'; returns its name."""
    with engine.connect(), engine.workspace(keep_container=True):
        engine.build()
    if not engine.x.dry_run:
        report.remember_container(engine.s.report, engine.container, engine.s.report_prefix,
                                  engine.s.report_root)
        engine.log.info("build_container_kept", container=engine.container,
                        report=str(engine.s.report))
    return engine.container


def commit_existing(engine: DockerEngine, name: str) -> Image:
    """'lwcontainer commit': commit and tag a kept build container, then remove it."""
    engine.wait_daemon()
    engine.base = engine.inspect_base() or {}
    engine.container = name
    with BuildContainer(engine.s, engine.docker, existing=name):
        return engine.measure(engine.commit())  # measured while the container still exists


def run_image(engine: DockerEngine, image: str, workspace: str | None, tty: bool,
              command: tuple[str, ...], named: bool = True) -> int:
    """'lwcontainer run': a command in a built image with CVMFS mounted as the settings say.
    An image chosen for the user (the report's, else TO) must be in the engine already: a
    missing one is named at once, before CVMFS is set up; one the user named may be pulled."""
    engine.wait_daemon()
    engine.log.info("run_image", image=image, chosen="named" if named else "report or TO")
    present = engine.x.dry_run or engine.docker.run(commands.image_inspect(image),
                                                    check=False).ok
    if not present and not named:
        raise ConfigError("TO", f"{image} (the last build's report, else TO) is not in the "
                                "engine: build it first (make image, or lwcontainer in the "
                                "project), run from the directory holding its report "
                                "(lwcontainer.env), or name the image: lwcontainer run IMAGE")
    if not present:  # pulled as the engine pulls (podman: its TLS rule), not by 'run' itself
        pulled = engine.docker.run(engine.pull_argv(image), retries=3, check=False,
                                   retry_if=worth_retrying_pull,
                                   what=f"{engine.cli.program} pull {image}")
        if not pulled.ok:
            raise pull_failure("IMAGE", image, pulled, logged_in=False)
    with ExitStack() as cleanup:
        cvmfs = engine.open_cvmfs(cleanup)
        engine.wait_cvmfs(cvmfs, image)
        done = engine.docker.run(commands.run_image(image, cvmfs.volume(), workspace, tty,
                                                    command),
                                 interactive=True, check=False, what=f"run {image}")
    return done.returncode
