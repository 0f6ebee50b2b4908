"""Pure argv builders for every docker command lwcontainer runs (without the leading ``docker``).

Nothing here runs a process: tests assert on the tuples, a dry run prints them.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping

from ...config.settings import Settings

Argv = tuple[str, ...]

#: Inside the automounter container the shared directory is always here (its image's contract).
AUTOMOUNTER_MOUNTS = "/cvmfsmounts"
BUILD_ROLE_LABEL = "lwcontainer.role"
OWNER_LABEL = "lwcontainer.owner"  # host/pid/start time of the run that made it (owner.py)
KEEP_LABEL = "lwcontainer.keep"  # kept after the build for 'lwcontainer commit'

STALE_MARK = "lwcontainer: unmounted stale mount "
# The automounter's entrypoint, wrapped: first unmount whatever a dead automounter left below
# "$1", the directory it mounts repositories in (/cvmfsmounts/cvmfs; nothing else of the shared
# directory, whatever its type), deepest first, then exec the image's own command ("$@" after
# "$1"), so
# the automounter itself stays PID 1. Runs again on every restart (--restart always).
PURGE_THEN_EXEC = (
    'root=$1; shift; for m in $(awk -v p="$root/" \'index($5, p) == 1 {print $5}\''
    ' /proc/self/mountinfo | sort -r); do umount -l "$m" && echo "' + STALE_MARK + '$m"; done;'
    ' exec "$@"'
)
READY_MARK = "lwc:ready"  # no repository name has a ':'


def _watch_script(every_cs: int) -> str:
    """One process that looks every ``every_cs`` hundredths of a second until every repository
    below "$2" is a readable, non-empty directory, then prints READY_MARK; or, after "$1"
    seconds' worth of looks, the ones still missing. Listing a repository is what makes an
    on-demand (autofs) automounter mount it. Bounded by counting (a ``sleep`` without
    fractions counts as a second), so it ends in an image without ``date`` too."""
    return ('left=$(( $1 * 100 )); root=$2; shift 2; while :; do missing=;'
            ' for r in "$@"; do ls -A "$root/$r" 2>/dev/null | grep -q . || missing="$missing $r";'
            ' done; [ -z "$missing" ] && { echo ' + READY_MARK + '; exit 0; };'
            ' [ "$left" -le 0 ] && { echo $missing; exit 0; };'
            f' if sleep {every_cs / 100:.2f} 2>/dev/null; then left=$((left - {every_cs}));'
            ' else sleep 1; left=$((left - 100)); fi; done')


WATCH_SCRIPT = _watch_script(5)  # a container of the base image, as the build sees /cvmfs
LOOK_SCRIPT = _watch_script(10)  # inside the automounter, while the base image is pulled

#: The build container's own first step (bash, which the build needs anyway; timed by bash's
#: SECONDS, no ``date`` needed): say on stderr that it checks (CVMFS_CHECKING: the container
#: runs), wait, up to "$1" seconds, until each of the "$2" repositories after it is a readable,
#: non-empty directory below /cvmfs, say so on stderr (CVMFS_READY, the repositories) and exec
#: the rest ("/bin/bash SCRIPT"); if one never comes, name the missing ones on stderr after
#: CVMFS_MISSING and exit CVMFS_MISSING_EXIT without running the script. A look is a glob (bash
#: itself lists the directory; an unreadable one matches nothing), every 20 ms: only the
#: ``sleep`` between two looks is a process of its own.
CVMFS_MISSING = "lwcontainer: CVMFS repositories missing in the build container:"
CVMFS_MISSING_EXIT = 97
CVMFS_CHECKING = "lwcontainer: checking CVMFS in the build container:"
CVMFS_READY = "lwcontainer: CVMFS ready in the build container:"
CHECK_THEN_EXEC = (
    'end=$(( SECONDS + $1 )); n=$2; shift 2; echo "' + CVMFS_CHECKING + ' ${*:1:n}" >&2;'
    ' shopt -s nullglob dotglob; while :; do missing=;'
    ' for r in "${@:1:n}"; do found=("/cvmfs/$r"/*);'
    ' [ "${#found[@]}" -gt 0 ] || missing="$missing $r"; done; [ -z "$missing" ] && break;'
    ' [ "$SECONDS" -ge "$end" ] && { echo "' + CVMFS_MISSING + '$missing" >&2;'
    f' exit {CVMFS_MISSING_EXIT}; }};'
    ' sleep 0.02 2>/dev/null || sleep 1; done; echo "' + CVMFS_READY + ' ${*:1:n}" >&2;'
    ' shift "$n"; exec "$@"'
)


def timeout_kind(argv: Argv) -> str:
    """Which wall-clock limit a docker call gets: the build's (attached start), a transfer's
    (pull, push, commit), none (an interactive run: a caller that is not gives its own), the
    CVMFS probe's (a named run), or the engine's (everything else, the automounter's start)."""
    if argv[:2] == ("start", "--attach"):
        return "build"
    if argv[:1] in (("pull",), ("push",), ("commit",)):
        return "transfer"
    if argv[:2] == ("run", "--detach"):  # the automounter: created and started, no more
        return "engine"
    if argv[:1] == ("run",) and "--name" not in argv:
        return "interactive"
    if argv[:1] == ("run",):
        return "probe"
    return "engine"


def server_version() -> Argv:
    return ("version", "--format", "{{.Server.Version}}")


def login(registry: str, user: str) -> Argv:
    return ("login", "--username", user, "--password-stdin", registry)


def image_inspect(ref: str) -> Argv:
    return ("image", "inspect", ref)


def container_inspect(name: str) -> Argv:
    return ("container", "inspect", name)


def pull(ref: str) -> Argv:
    return ("pull", "--quiet", ref)


def automounter_run(s: Settings, command: tuple[str, ...], labels: Argv = ()) -> Argv:
    """The recipe's automounter, started in the background under its name (which it claims);
    ``command`` is the image's own entrypoint and command, run after the stale-mount purge;
    ``labels`` name the run that made it."""
    return ("run", "--detach", "--name", s.automounter_name, "--pid=host", "--user", "0",
            *s.automounter_options, "--restart", "always",
            "--label", f"{BUILD_ROLE_LABEL}=automounter", *labels,
            "-v", f"{s.cvmfs_mounts}:{AUTOMOUNTER_MOUNTS}:rshared",
            "--entrypoint", "/bin/sh", str(s.automounter_image),
            "-c", PURGE_THEN_EXEC, "automounter", f"{AUTOMOUNTER_MOUNTS}/cvmfs", *command)


def stop(name: str, timeout: int = 10) -> Argv:
    return ("stop", "--time", str(timeout), name)


def kill(name: str) -> Argv:
    return ("kill", name)


def remove(name: str, options: Argv = ()) -> Argv:
    """Remove a container, running or not; ``options``: the engine's (EngineCli.remove_options,
    podman: no stop timeout)."""
    return ("rm", "--force", *options, "--volumes", name)


def logs(name: str, tail: int | None = None) -> Argv:
    return ("logs", *(("--tail", str(tail)) if tail is not None else ()), name)


def look_in_automounter(s: Settings, seconds: int) -> Argv:
    """One ``docker exec`` that looks at the repositories inside the automounter until they
    are all there (READY_MARK) or ``seconds`` pass (the ones missing)."""
    return ("exec", s.automounter_name, "/bin/sh", "-c", LOOK_SCRIPT, "look", str(seconds),
            f"{AUTOMOUNTER_MOUNTS}/cvmfs", *s.cvmfs_repos)


def cvmfs_volume(source: str, s: Settings, propagate: bool = True) -> Argv:
    """How a container sees /cvmfs: through the automounter (rslave, so mounts made later
    appear), from the host's own CVMFS (read-only; rslave too where the host's directory is on
    a shared mount, as an autofs /cvmfs is), or not at all."""
    if source == "automounter":
        return ("-v", f"{s.cvmfs_mounts}/cvmfs:/cvmfs:rslave")
    if source == "host":
        return ("-v", f"{s.cvmfs_host_dir}:/cvmfs:ro" + (",rslave" if propagate else ""))
    return ()


def watch_as_build(volume: Argv, image: str, name: str, seconds: int,
                   repos: tuple[str, ...]) -> Argv:
    """The repositories as the build will see them (same image, same mount), watched from
    inside one container until they are all there or ``seconds`` pass."""
    return ("run", "--rm", "--name", name, *volume, "--entrypoint", "/bin/sh", image,
            "-c", WATCH_SCRIPT, "watch", str(seconds), "/cvmfs", *repos)


def build_create(s: Settings, name: str, volume: Argv, git: bool = False,
                 labels: Argv = (), options: Argv = (), cvmfs_wait: int | None = None) -> Argv:
    """The recipe's ``docker run``, split in create and start: the container exists (and marks
    the automounter as in use) while CVMFS comes up. Checkout mounted at its own path (its
    ``.git``, when there is one, read-only: git on the host runs what ``.git/config`` names),
    CVMFS as chosen, no privileges; the LWC_BUILD_ENV variables by name (``-e NAME``: docker
    takes the value from its own environment, so it is never on a command line). ``options``:
    what another CLI needs besides (podman: --unsetenv). With ``cvmfs_wait`` (seconds) the
    container first checks every repository as the build sees it (CHECK_THEN_EXEC), then execs
    the build script."""
    project = str(s.project_dir)
    passed = tuple(arg for variable in s.build_env for arg in ("-e", variable))  # by name only
    readonly_git = ("-v", f"{project}/.git:{project}/.git:ro") if git else ()
    build = ("/bin/bash", s.build_script)
    if cvmfs_wait is not None:
        build = ("/bin/bash", "-c", CHECK_THEN_EXEC, "lwc-cvmfs-check", str(cvmfs_wait),
                 str(len(s.cvmfs_repos)), *s.cvmfs_repos, *build)
    return ("create", "--name", name, "--label", f"{BUILD_ROLE_LABEL}=build", *labels, *options,
            *passed,
            *volume, "-v", f"{project}:{project}", *readonly_git, "-w", project,
            str(s.from_image), *build)


def run_image(image: str, volume: Argv, workspace: str | None, tty: bool,
              command: tuple[str, ...]) -> Argv:
    """``lwcontainer run``: the built image with CVMFS mounted exactly as for the build."""
    return ("run", "--rm", *(("-it",) if tty else ()), *volume,
            *(("-v", f"{workspace}:{workspace}", "-w", workspace) if workspace else ()),
            image, *command)


def lease_create(s: Settings, name: str, labels: Argv = (), image: str | None = None) -> Argv:
    """A never-started container of the automounter image (or ``image``: the running
    automounter's, by id), counted as a build in progress."""
    return ("create", "--name", name, "--label", f"{BUILD_ROLE_LABEL}=build", *labels,
            image or str(s.automounter_image))


def owner_labels(owner: str, keep: bool = False) -> Argv:
    """Who made a build or lease container (engines/docker/owner.py), and whether it is kept
    for a later 'lwcontainer commit'."""
    return ("--label", f"{OWNER_LABEL}={owner}", *(("--label", f"{KEEP_LABEL}=1") if keep else ()))


def build_start(name: str) -> Argv:
    """Run the created build container, attached: its output streams, its exit code returns."""
    return ("start", "--attach", name)


def commit(name: str, changes: Iterable[str], target: str) -> Argv:
    """The image, named ``target`` (TO) at once: no tag step on the way to the push."""
    return ("commit", *(arg for change in changes for arg in ("--change", change)), name, target)


def tag(source: str, target: str) -> Argv:
    return ("tag", source, target)


def push(ref: str) -> Argv:
    return ("push", ref)


#: How ``ps --format`` reads one label (docker's template; podman's: EngineCli.label_format).
LABEL_FORMAT = '{{.Label "%s"}}'
#: How ``ps --format`` reads the state as one word (docker's; podman's: EngineCli.state_format).
STATE_FORMAT = "{{.State}}"


def build_fields(label_format: str = LABEL_FORMAT,
                 state_format: str = STATE_FORMAT) -> tuple[str, ...]:
    return ("{{.ID}}", "{{.Names}}", state_format, label_format % OWNER_LABEL,
            label_format % KEEP_LABEL)


BUILD_FIELDS = build_fields()


def build_containers(label_format: str = LABEL_FORMAT, state_format: str = STATE_FORMAT) -> Argv:
    """Every build and lease container on the engine, of any run, in any state: one line each,
    BUILD_FIELDS separated by tabs."""
    return ("ps", "--all", "--no-trunc", "--filter", f"label={BUILD_ROLE_LABEL}=build",
            "--format", "\t".join(build_fields(label_format, state_format)))


def commit_changes(base_config: Mapping | None, labels: Mapping[str, str]) -> tuple[str, ...]:
    """Dockerfile instructions that undo what the build run changed in the container config.

    The build container's CMD is the build script and its WORKDIR the checkout: restore the
    base image's CMD, ENTRYPOINT, WORKDIR and USER. docker commit cannot clear a CMD or
    ENTRYPOINT (an empty list keeps the container's), so a base without CMD gets ``/bin/sh``.
    """
    if base_config is None:  # a dry run that cannot know the base's config
        unknown = "(from the base image)"
        return (f"CMD {unknown}", f"ENTRYPOINT {unknown}", f"WORKDIR {unknown}",
                f"USER {unknown}", f'LABEL {json.dumps(BUILD_ROLE_LABEL)}="image"',
                *(f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()))
    config = base_config
    changes = []
    cmd = config.get("Cmd") or ["/bin/sh"]
    changes.append(f"CMD {json.dumps(cmd)}")
    if config.get("Entrypoint"):
        changes.append(f"ENTRYPOINT {json.dumps(config['Entrypoint'])}")
    changes.append(f"WORKDIR {config.get('WorkingDir') or '/'}")
    if config.get("User"):
        changes.append(f"USER {config['User']}")
    changes.append(f'LABEL {json.dumps(BUILD_ROLE_LABEL)}="image"')
    changes.extend(f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
    return tuple(changes)
