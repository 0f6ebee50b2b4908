"""The test bed touches nothing of the host but its own state: a second bed, brought up and taken
down here, leaves the host's docker0, links, routes, firewall, mounts and the default engine
exactly as they were (while it runs, only its own bridge, route and mounts are added)."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path


from conftest import ROOT, free_port

DEFAULT_SOCKET = Path("/var/run/docker.sock")
# An image in the default engine to run afterwards: .ci/run imports one into the engine it
# starts and names it here; a user's own engine is only asked whether it still answers.
HOST_CHECK_IMAGE = os.environ.get("LWC_HOST_CHECK_IMAGE", "")


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else f"<{argv[0]} failed: {done.returncode}>"


def default_engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "--host", f"unix://{DEFAULT_SOCKET}", *args],
                          capture_output=True, text=True, timeout=60)


# The state of containers coming and going (their veth links, network namespaces, a bridge's
# carrier, their root filesystems) is the engines' own business, whichever engine and wherever
# its data root; what a bed must not change is configuration.
BUSY_PREFIXES = ("/run/lwc-testbed", "/var/lib/lwc-testbed", "/run/lwc-bench",
                 "/var/lib/lwc-bench", "/run/docker/", "/var/run/docker/", "/var/lib/docker/",
                 "/run/containerd/", "/var/lib/containerd/")
OPERATIONAL = {"NO-CARRIER", "LOWER_UP", "UP", "DOWN", "UNKNOWN", "linkdown", "DORMANT"}
#: Options of dockerd and containerd that name where they keep state (and mount containers).
ROOT_OPTIONS = ("--data-root", "--exec-root", "-g", "--graph", "--root", "--state",
                "--config")
#: Links an engine adds and removes with its containers and user-defined networks.
ENGINE_LINKS = ("veth", "br-")


def engine_roots(proc: Path = Path("/proc")) -> tuple[str, ...]:
    """Where every running Docker engine and containerd keeps its state, from their command
    lines (``--data-root X`` or ``--data-root=X``), plus the default engine's own answer: their
    mounts come and go with their containers whatever the test bed does."""
    roots = set(BUSY_PREFIXES)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv if w]
        if not words or Path(words[0]).name not in ("dockerd", "containerd"):
            continue
        for i, word in enumerate(words):
            name, eq, value = word.partition("=")
            if name in ROOT_OPTIONS:
                value = value if eq else (words[i + 1] if i + 1 < len(words) else "")
                if value.startswith("/"):
                    # containerd's --config lies in its state directory; take that directory
                    path = Path(value).parent if name == "--config" else Path(value)
                    roots.add(str(path).rstrip("/") + "/")
    if DEFAULT_SOCKET.exists():
        answer = default_engine("info", "--format", "{{.DockerRootDir}}")
        if answer.returncode == 0 and answer.stdout.strip().startswith("/"):
            roots.add(answer.stdout.strip().rstrip("/") + "/")
    return tuple(sorted(roots))


def stable(text: str) -> str:
    return " ".join(w for w in text.replace("<", " ").replace(">", " ").replace(",", " ").split()
                    if w not in OPERATIONAL)


def engine_link(line: str) -> bool:
    parts = line.split(": ", 2)
    return len(parts) == 3 and parts[1].startswith(ENGINE_LINKS)


def iptables_kept(line: str) -> bool:
    """Chain policies and rules of docker0 or a bed: what a bed's engine could change (another
    engine's containers publish ports and add rules of their own at any time)."""
    return line.startswith(":") or "docker0" in line or "lwc-" in line


def snapshot() -> dict[str, object]:
    busy = engine_roots()
    mounts = set()
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4]
            if not point.startswith(busy) and point + "/" not in busy:
                mounts.add(point)
    links = set(line for line in run("ip", "-o", "link", "show").split("\n")
                if line and not engine_link(line))
    state: dict[str, object] = {
        "links": links,
        "docker0": run("ip", "-o", "addr", "show", "dev", "docker0"),
        "routes": {stable(route) for route in run("ip", "route").splitlines()
                   if " br-" not in route},
        "mounts": mounts,
    }
    if shutil.which("iptables-save"):
        state["iptables"] = "\n".join(re.sub(r" \[\d+:\d+\]$", "", line)
                                      for line in run("iptables-save").splitlines()
                                      if iptables_kept(line))
    if DEFAULT_SOCKET.exists():  # its default networks; a user's own may come and go
        state["default networks"] = "\n".join(
            line for line in default_engine("network", "ls", "--format",
                                            "{{.ID}} {{.Name}} {{.Driver}}").stdout.splitlines()
            if line.split()[1:2] in (["bridge"], ["host"], ["none"]))
    return state


def links_by_name(lines: set[str]) -> dict[str, str]:
    """'841: docker0: <FLAGS> … state …' -> name: the line without counters that change."""
    out = {}
    for line in lines:
        parts = line.split(": ", 2)
        if len(parts) == 3:
            out[parts[1].split("@")[0]] = stable(parts[2].split(" link/")[0])
    return out


def without(state: dict, bridge: str, run_dir: str, state_dir: str, cidr: str) -> dict:
    """The state less what the second bed itself adds while it runs."""
    out = dict(state)
    out["links"] = {k: v for k, v in links_by_name(state["links"]).items() if k != bridge}
    out["routes"] = {r for r in state["routes"] if bridge not in r}
    out["mounts"] = {m for m in state["mounts"]
                     if not m.startswith((run_dir + "/", state_dir + "/")) and m != run_dir}
    return out


def test_the_test_bed_leaves_the_host_as_it_was(testbed, tmp_path):
    token = secrets.token_hex(2)
    bridge, cidr = f"lwc-br-hc{token}", "10.213.79.1/24"
    run_dir, state_dir = f"/run/lwc-hostcheck-{token}", str(tmp_path / "state")
    env = {**os.environ, "LWC_TESTBED_RUN": run_dir, "LWC_TESTBED_STATE": state_dir,
           "LWC_TESTBED_PORT": str(free_port()), "LWC_TESTBED_BRIDGE": bridge,
           "LWC_TESTBED_BRIDGE_CIDR": cidr, "LWC_TESTBED_IMAGES": "none",
           # a podman user of its own: 'down' resets its user's store, which must not be the
           # running bed's (the rootless podman tests use that one afterwards)
           "LWC_TESTBED_PODMAN_USER": f"lwc-hc{token}",
           "LWC_TESTBED_PODMAN_SUBIDS": "600000-665535"}
    script = str(ROOT / "scripts" / "testbed.sh")
    before = snapshot()
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        during = snapshot()
        assert bridge in links_by_name(during["links"])
        assert without(during, bridge, run_dir, state_dir, cidr) == \
            without(before, bridge, run_dir, state_dir, cidr)
    finally:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True,
                              timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    after = snapshot()
    assert {**after, "links": links_by_name(after["links"])} == \
        {**before, "links": links_by_name(before["links"])}
    assert not Path(run_dir).exists() and not Path(state_dir).exists()
    if DEFAULT_SOCKET.exists():  # a user's own engine, or the one .ci/run started
        assert default_engine("info").returncode == 0
        if HOST_CHECK_IMAGE:
            ran = default_engine("run", "--rm", HOST_CHECK_IMAGE, "true")
            assert ran.returncode == 0, ran.stderr
