"""Command line: ``lwcontainer`` runs the whole pipeline; subcommands run single stages."""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

from plumbum import cli

from . import __version__, pipeline, signals
from .ci import scaffold
from .ci.github import add_mask_commands
from .config.secrets import masked_texts
from .config.settings import GROUPS, PASSWORD_VARIABLES, SPEC_BY_NAME, SPECS, Settings
from .config.sources import gather
from .engines import make_engine
from .errors import EXIT_MEANINGS, ConfigError, ExitCode, LwcError
from .executor import DryRunExecutor, Executor
from .output import logs, report
from .output.masking import Masker
from .stages import Stages, write_report

def short_help(spec) -> str:
    """One line of --help: the variable and its default; 'lwcontainer help settings' says what
    each means."""
    default = spec.display if len(spec.display) <= 20 else "see help settings"
    return f"{spec.variable}" + (f" ({default})" if default else "")


def switches(*groups: str) -> type:
    """A mixin with one switch per setting of ``groups`` (a secret never gets one: it would go
    into argv), each with a one-line help; 'lwcontainer help settings' has the whole table."""
    attrs = {
        name: cli.SwitchAttr(SPEC_BY_NAME[name].switch, str, default=None, argname="VALUE",
                             group=group, help=short_help(SPEC_BY_NAME[name]))
        for group in groups for name in GROUPS[group] if not SPEC_BY_NAME[name].secret
    }
    attrs["env_file"] = cli.SwitchAttr(
        "--env-file", str, default=None, argname="PATH", group="Run",
        help="settings file (default ./.env)")
    attrs["dry_run"] = cli.Flag("--dry-run", group="Run",
                                help="print the plan's commands; touch no engine")
    return type("Switches", (), attrs)


ALL_GROUPS = tuple(GROUPS)


class Command(cli.Application):
    """Shared by the root and every subcommand: gather settings, run an action, map errors."""

    DESCRIPTION_MORE = "What each setting means, and its default: lwcontainer help settings"
    publishes = False  # 'publish': a captured layer in the checkout may choose the engine

    def switch_values(self) -> dict[str, str | None]:
        chain = []
        app: cli.Application | None = self
        while app is not None:
            chain.append(app)
            app = app.parent
        values: dict[str, str | None] = {}
        for app in reversed(chain):  # root first; a subcommand's own switches win
            values.update({spec.variable: getattr(app, spec.variable) for spec in SPECS
                           if getattr(app, spec.variable, None) is not None})
        return values

    def option(self, name: str):
        app: cli.Application | None = self
        found = None
        while app is not None:
            found = found or getattr(app, name, None)
            app = app.parent
        return found

    def guard(self, body: Callable[[Masker], int | None]) -> int:
        """Configure logging, run ``body``, and turn every failure into its exit code."""
        environ = dict(os.environ)
        masker = Masker(secret_texts(environ))
        # Configured once, before anything can fail, from the switches and the environment;
        # only a .env that sets the log settings differently makes execute() configure again.
        given = {**environ, **self.switch_values()}
        self.logging = (given.get("LWC_LOG_FORMAT") or "auto",
                        (given.get("LWC_LOG_LEVEL") or "info").lower())
        try:
            logs.configure(*self.logging, masker)
        except (KeyError, ValueError, TypeError):  # a bad level: Settings names it next
            self.logging = (self.logging[0], "info")
            logs.configure(*self.logging, masker)
        log = logs.get_logger()
        try:
            return int(body(masker) or ExitCode.OK)
        except LwcError as exc:
            log.error("failed", error=masker(str(exc)), exit_code=int(exc.exit_code),
                      meaning=EXIT_MEANINGS[exc.exit_code])
            return int(exc.exit_code)
        except KeyboardInterrupt as exc:
            log.error("interrupted", signal=getattr(exc, "signal_name", "SIGINT"),
                      exit_code=int(ExitCode.INTERRUPTED))
            return int(ExitCode.INTERRUPTED)
        except Exception:  # a bug: report it through the masked log, not a raw traceback
            log.exception("internal_error", exit_code=int(ExitCode.INTERNAL))
            return int(ExitCode.INTERNAL)

    def execute(self, action: Callable[[Run], int | None], require_from: bool = True,
                subcommand: str = "") -> int:
        """Gather and validate the settings, then run ``action`` on this run's parts;
        ``subcommand`` names a single-stage subcommand the engine must have."""
        def body(masker: Masker) -> int | None:
            environ = dict(os.environ)
            raw = gather(environ, self.switch_values(), self.option("env_file"))
            secrets = secret_texts(raw)
            masker.add(*secrets)
            for secret in secrets:
                masker.add_credentials(raw.get("CI_REGISTRY_USER"), secret)
            if raw.get("GITHUB_ACTIONS") == "true":  # before anything else is printed
                for secret in secrets:
                    print("\n".join(add_mask_commands(secret)), flush=True)
            settings = Settings.from_mapping(raw, require_from=require_from)
            if (settings.log_format, settings.log_level) != self.logging:
                logs.configure(settings.log_format, settings.log_level, masker)
            executor = (DryRunExecutor if self.option("dry_run") else Executor)(masker)
            from .engines.choice import choose_engine  # not needed for --help, --version
            settings = choose_engine(settings, executor, environ, self.publishes)
            stages = Stages(settings, masker, executor.out)
            engine = make_engine(settings, executor, stages, environ, subcommand)
            return action(Run(settings, executor, stages, engine, environ))
        return self.guard(body)


def secret_texts(env: dict[str, str]) -> list[str]:
    """What the masker hides: every secret variable's value (config/secrets.py) and the
    secrets inside it; a registry password however short."""
    texts = [*masked_texts(env), *(env[name] for name in PASSWORD_VARIABLES if env.get(name))]
    return list(dict.fromkeys(texts))


def single_stage():
    """The single-stage compositions (engines/docker/subcommands.py), imported when one runs:
    --help and --version start without them."""
    from .engines.docker import subcommands
    return subcommands


def capture_script() -> str:
    """The in-place capture script init writes, rendered when init runs."""
    from .engines.inplace import capture
    return capture.render()


class Run:
    """This run's parts, handed to a subcommand's action."""

    def __init__(self, settings: Settings, executor: Executor, stages: Stages, engine,
                 environ: dict[str, str]) -> None:
        self.s = settings
        self.x = executor
        self.stages = stages
        self.engine = engine
        self.environ = environ

    @property
    def dry_run(self) -> bool:
        return self.x.dry_run


class Lwcontainer(Command, switches(*ALL_GROUPS)):
    """Build a light-weight CMS image: run the build script in FROM with CVMFS mounted,
    commit, tag and push. Without a subcommand every stage runs in the project directory."""

    PROGNAME = "lwcontainer"
    VERSION = __version__

    @cli.switch(["-h", "--help"], overridable=True, group="Meta-switches")
    def help(self) -> None:  # noqa: A003 - plumbum's name
        """Prints this help message and quits"""
        if self.nested_command or len(_ARGV) > 1 and _ARGV[1] not in ("-h", "--help"):
            return super().help()
        print(ROOT_HELP)
    def main(self, *args: str) -> int:
        if args:
            print(f"unknown command {args[0]!r}; see --help", file=sys.stderr)
            return int(ExitCode.CONFIG)
        if self.nested_command:
            return 0
        return self.execute(lambda r: pipeline.whole_job(r.engine, r.stages, r.s, r.dry_run)
                            and None)


@Lwcontainer.subcommand("login")
class Login(Command, switches("Registry", "Engine", "Output")):
    """Wait for the engine and log in to CI_REGISTRY (password on stdin)."""

    def main(self) -> int:
        return self.execute(lambda r: single_stage().login_only(r.engine), require_from=False,
                            subcommand="login")


@Lwcontainer.subcommand("automount")
class Automount(Command, switches("Image", "Build", "CVMFS", "Engine", "Output")):
    """Start (or reuse) the CVMFS automounter and wait for the repositories; leave it running."""

    def main(self) -> int:
        return self.execute(lambda r: single_stage().automount(r.engine), subcommand="automount")


@Lwcontainer.subcommand("build")
class Build(Command, switches("Image", "Build", "CVMFS", "Engine", "Output")):
    """Run the build script with CVMFS mounted; keep the stopped container for 'commit'."""

    def main(self) -> int:
        return self.execute(lambda r: single_stage().build_only(r.engine) and None,
                            subcommand="build")


@Lwcontainer.subcommand("run")
class RunImage(Command, switches("Image", "CVMFS", "Engine", "Output")):
    """Run a command in a built image with CVMFS mounted as the settings say (LWC_CVMFS):
    lwcontainer run [IMAGE] [-- CMD ...]. IMAGE defaults to the last one built (the report),
    else TO. Interactive with a TTY on a terminal; the exit code is the command's."""

    workspace = cli.Flag("--workspace", help="also mount the working directory at its own path")

    def main(self, *args: str) -> int:
        image, command = split_run_args(args, _ARGV)

        def action(r: Run) -> int:
            # The report lies in the checkout, which the build can write: only the image id
            # (checked as sha256:<hex>) comes from it; CVMFS comes from the settings.
            previous = report.read(r.s.report, r.s.report_prefix)
            target = image or previous.get("LWC_IMAGE_ID") or str(r.s.to_image)
            tty = sys.stdin.isatty() and sys.stdout.isatty()
            workspace = str(Path.cwd()) if self.workspace else None
            return single_stage().run_image(r.engine, target, workspace, tty, command,
                                         named=bool(image))
        return self.execute(action, require_from=False, subcommand="run")


def init_switches() -> type:
    """The settings init honours: where the project is, and the build script and build
    environment its CI file names."""
    attrs = {name: cli.SwitchAttr(SPEC_BY_NAME[name].switch, str, default=None, argname="VALUE",
                                  help=SPEC_BY_NAME[name].help)
             for name in ("LWC_PROJECT_DIR", "LWC_BUILD_SCRIPT", "LWC_BUILD_ENV")}
    return type("InitSwitches", (), attrs)


@Lwcontainer.subcommand("init")
class Init(Command, init_switches()):
    """Scaffold this repository: GitLab CI job(s) running lwcontainer and a CMS build script.
    --engine inplace (the default here: runners tagged cvmfs, no privileges) writes a capture and
    a publish job and .gitlab/lwcontainer-capture.sh; --engine docker a privileged dind job;
    --component PATH@VERSION a pipeline that includes lwcontainer's CI/CD component. FROM goes
    into .env too (for a local run). Never overwrites a file unless --force."""

    cmssw_release = cli.SwitchAttr("--cmssw-release", str, default=scaffold.DEFAULT_RELEASE,
                                   help="CMSSW release the build script sets up")
    base_image = cli.SwitchAttr("--base-image", str, default=scaffold.DEFAULT_BASE_IMAGE,
                                help="FROM: the CMS base image to build on (CI file and .env)")
    force = cli.Flag("--force", help="overwrite existing files")
    scram_arch = cli.SwitchAttr("--scram-arch", str, default=scaffold.DEFAULT_SCRAM_ARCH,
                                help="SCRAM_ARCH of that release")
    package_source = cli.SwitchAttr("--package-source", str, default=None, argname="GIT_URL",
                                    help="install lwcontainer in CI from git+https://…@TAG "
                                         "(default: lwcontainer==this version from "
                                         "$LWC_PACKAGE_INDEX)")
    LWC_ENGINE = cli.SwitchAttr("--engine", cli.Set(*scaffold.SCAFFOLD_ENGINES), default=None,
                                help="inplace (default here: runners tagged cvmfs, no privileges) "
                                     "| docker (a privileged dind runner)")
    matrix = cli.SwitchAttr("--matrix", str, list=True, argname="IMAGE",
                            help="one base image per parallel:matrix job (repeat the switch); "
                                 "each pushes $CI_REGISTRY_IMAGE/<image name>")
    component = cli.SwitchAttr("--component", str, default=None, argname="PATH@VERSION",
                               help="include lwcontainer's CI/CD component, e.g. "
                                    f"gitlab.cern.ch/cms-cloud/lwcontainer@{__version__}")

    def main(self) -> int:
        def body(_masker: Masker) -> None:
            directory = Path(self.option("LWC_PROJECT_DIR") or ".").resolve()
            options = scaffold.Options(
                release=self.cmssw_release, base_image=self.base_image,
                matrix=tuple(self.matrix), engine=self.option("LWC_ENGINE") or "inplace",
                scram_arch=self.scram_arch, source=self.package_source,
                build_script=self.LWC_BUILD_SCRIPT or scaffold.DEFAULT_BUILD_SCRIPT,
                build_env=(self.LWC_BUILD_ENV if self.LWC_BUILD_ENV is not None
                           else scaffold.DEFAULT_BUILD_ENV),
                component=self.component, capture_script=capture_script())
            scaffold.init(directory, options, self.force)
        return self.guard(body)


def split_run_args(args: tuple[str, ...], argv: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """plumbum drops ``--``: take IMAGE and CMD apart by where it stood in the raw argv."""
    if "--" in argv:
        command = tuple(argv[argv.index("--") + 1:])
        before = args[:len(args) - len(command)]
    else:
        command, before = (), args
    if len(before) > 1:
        raise ConfigError("run", "give at most one IMAGE; put the command after '--'")
    return (before[0] if before else None), command


@Lwcontainer.subcommand("commit")
class Commit(Command, switches("Image", "Build", "Engine", "Output", "CI", "Labels")):
    """Commit a build container (default: the one 'build' left) and tag it; then remove it."""

    def main(self, container: str = "") -> int:
        def action(r: Run) -> None:
            previous = report.read(r.s.report, r.s.report_prefix)
            name = container or previous.get("LWC_BUILD_CONTAINER", "")
            if not name:
                raise ConfigError("CONTAINER", "no container given and no LWC_BUILD_CONTAINER "
                                               f"in {r.s.report}; run 'lwcontainer build' first")
            image = single_stage().commit_existing(r.engine, name)
            write_report(r.stages, r.s, image, "", r.dry_run)
        return self.execute(action, subcommand="commit")


@Lwcontainer.subcommand("push")
class Push(Command, switches("Image", "Registry", "Engine", "Output", "CI", "Labels")):
    """Log in and push TO and the extra tags of an image already built (docker, podman: the
    engine's; inplace: the captured layer); write the report."""
    # A layer file in the checkout chooses no engine here: 'push' is what a docker or podman
    # run says to try again with, and its build script could have written one there.

    def main(self) -> int:
        return self.execute(lambda r: pipeline.publish_only(r.engine, r.stages, r.s, r.dry_run)
                            and None, require_from=False)


@Lwcontainer.subcommand("publish")
class Publish(Push):
    """'push', and the second job of the in-place engine's pipeline: LWC_ENGINE unset, a
    captured layer in the checkout that git does not track chooses inplace."""

    publishes = True


@Lwcontainer.subcommand("help")
class Help(cli.Application):
    """lwcontainer help settings | exit-codes: the full tables."""

    def main(self, topic: str = "") -> int:
        topics = {"settings": settings_help, "exit-codes": exit_codes_help}
        if topic not in topics:
            print("lwcontainer help settings | exit-codes")
            return 0 if not topic else int(ExitCode.CONFIG)
        print(topics[topic]())
        return 0


def settings_help() -> str:
    """Every setting, grouped: variable, switch, meaning, default, whether .env may set it."""
    width = max(len(spec.variable) for spec in SPECS)
    lines = []
    for group, names in GROUPS.items():
        lines.append(f"{group}:")
        for spec in (SPEC_BY_NAME[name] for name in names):
            switch = "(environment only)" if spec.secret else spec.switch
            dotenv = "; the checkout's .env may set it" if spec.dotenv else ""
            lines.append(f"  {spec.variable:<{width}}  {switch}\n      {spec.help}\n"
                         f"      default: {spec.display or '(unset)'}{dotenv}")
    return "\n".join(lines)


def exit_codes_help() -> str:
    return "\n".join(f"{int(code):>4}  {meaning}" for code, meaning in EXIT_MEANINGS.items())


ROOT_HELP = f"""lwcontainer {__version__}: build a light-weight CMS image (FROM plus your build,
with CVMFS mounted while building) and push it.

Usage: lwcontainer [SWITCHES]                 the whole job, in the project directory
       lwcontainer SUBCOMMAND [SWITCHES]      one part of it

Subcommands:
  publish     push an image built earlier (inplace: the captured layer) and write the report
  init        write GitLab CI jobs, .gitlab/build.sh (and the capture script) into a project
  run         run a command in the built image with CVMFS mounted (LWC_CVMFS)
  build, commit, push, login, automount     docker's or podman's stages one by one
  help        'lwcontainer help settings' (every setting), 'lwcontainer help exit-codes'

Switches most runs need (every setting also has a variable and a switch):
  --engine ENGINE           LWC_ENGINE: auto (default: docker if it answers, else podman),
                            docker, podman (rootless too) or inplace (no engine)
  --from IMAGE              FROM: the CMS base image the build runs in (required)
  --to IMAGE                TO: what to push (CI: $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA)
  --build-script PATH       LWC_BUILD_SCRIPT (default .gitlab/build.sh)
  --cvmfs SOURCE            LWC_CVMFS: auto | host | automounter | none
  --registry HOST           CI_REGISTRY; user --registry-user; the password only in the
                            environment (CI_REGISTRY_PASSWORD or CI_JOB_TOKEN), never a switch
  --env-file PATH           settings from a file (default ./.env: build inputs only)
  --dry-run                 print the plan's commands, secrets masked; touch no engine
  -h, --help / -v, --version / SUBCOMMAND --help

Exit codes: 0 done, 2 settings, 3 engine or registry unreachable, 4 login refused,
5 CVMFS, 6 build, 7 commit, 8 push, 130 interrupted ('lwcontainer help exit-codes')."""

_ARGV: list[str] = []


def run() -> NoReturn:
    """The command (``lwcontainer``, ``python -m lwcontainer``): ``main()``, then exit. Every
    object is frozen first, so the collector does not walk them all once more on the way out
    (about 30 ms of a run's end; ``main()`` itself leaves the collector alone)."""
    code = main()
    gc.freeze()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    signals.install()
    args = sys.argv if argv is None else ["lwcontainer", *argv]
    _ARGV[:] = args
    _, code = Lwcontainer.run(args, exit=False)
    return int(code or 0)
