"""The capture on the real test bed, against what other appliers make of its layer.

A base with the shapes a hostile build changes is derived from the CMS-like fixture base and
pushed to the test registry. The generated capture script runs in a container of it (as root,
and as uid 1000 the way an unprivileged runner runs it); right after the build, before the
capture looks at anything, a manifest of that container's filesystem is taken with find, sha256sum
and getcap (less its mounts). The layer is published by ``lwcontainer publish`` and applied
twice: by the engine (``docker pull``) and by umoci (``skopeo copy`` into an OCI layout, then
``umoci unpack`` as root). Each result is compared with the build container's manifest entry by
entry — never with the capture's own lists. Also: 30 captures under SOURCE_DATE_EPOCH give one
digest, a build that copies the job token into the image gets no layer, and the capture with
the tools of CentOS 7's age (shims that refuse newer options) gives the same layer."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT
from test_capture import old_tools
from test_inplace_e2e import CAPTURE, FIXTURE_CVMFS, Runner, pull

TOOLS_IN_CONTAINER = "/opt/lwc-tools"

# What the base gets (as root), so the build has something of FROM to delete and replace; the
# same under /home/cmsusr/base, owned by cmsusr, for the uid-1000 build.
SHAPES = r"""
set -e
shapes() { # dir
  d=$1
  mkdir -p "$d/py/foo/sub" "$d/py/foo-1.0.dist-info" "$d/work/build" "$d/d2f/sub" "$d/d2s/inner" \
           "$d/refill" "$d/quiet"
  printf x > "$d/py/foo/__init__.py"; printf deep > "$d/py/foo/sub/deep.py"
  printf r > "$d/py/foo-1.0.dist-info/RECORD"
  printf o > "$d/work/build/o"; printf log > "$d/work/build.log"
  printf f > "$d/d2f/sub/f"; printf f > "$d/f2d"; ln -s /usr/share "$d/s2d"
  printf g > "$d/d2s/inner/g"; printf 1 > "$d/refill/one"; printf 2 > "$d/refill/two"
  printf 1 > "$d/quiet/one"; printf 2 > "$d/quiet/two"
  printf long > "$d/$(printf 'L%.0s' $(seq 253))"; printf m > "$d/$(printf 'M%.0s' $(seq 230))"
  printf nl > "$d/old
line"
  printf g > "$d/$(printf 'gone\377')"
}
shapes /opt/shapes
shapes /home/cmsusr/base && chown -R 1000:1000 /home/cmsusr/base
"""

# Every hostile case the user may do, in DIR; then root's extras.
HOSTILE = r"""
set -e
d=$1
rm -rf "$d/py/foo" "$d/py/foo-1.0.dist-info"             # pip uninstall: foo and foo-1.0...
rm -rf "$d/work/build" "$d/work/build.log"                 # build and build.log
rm -rf "$d/d2f" && printf 'now a file' > "$d/d2f"          # dir -> file
rm "$d/f2d" && mkdir "$d/f2d" && printf in > "$d/f2d/x"     # file -> dir
rm "$d/s2d" && mkdir "$d/s2d" && printf in > "$d/s2d/y"     # symlink -> dir
rm -rf "$d/d2s" && ln -s /usr "$d/d2s"                      # dir -> symlink
rm -rf "$d/refill" && mkdir "$d/refill" && printf again > "$d/refill/one"
printf x > "$d/suid" && chmod 4755 "$d/suid"
mkfifo "$d/fifo"
printf long > "$d/$(printf 'a%.0s' $(seq 220))"
rm "$d/$(printf 'L%.0s' $(seq 253))" "$d/$(printf 'M%.0s' $(seq 230))"
printf b > "$d/$(printf 'bad\377\376name')" && rm "$d/$(printf 'gone\377')"
printf n > "$d/new
line" && rm "$d/old
line"
cp -a /etc/skel "$d/skel-copy"
printf old > "$d/old" && touch -d 2001-01-01 "$d/old"
rm "$d/quiet/one"                                           # one file, in an unchanged dir
"""

# Directories made in the job container before the capture (its writable layer: a rename there
# is a rename, not overlay's copy-up), then renamed and replaced by the build. Nothing of them
# is deleted: a whiteout for what FROM does not have shows in an overlay engine as a name that
# cannot be opened (the capture cannot tell FROM's files from those made before it started).
BEFORE_CAPTURE = r"""
set -e
d=$1
mkdir -p "$d-pre/sub" "$d-new" "$d-old"
printf p > "$d-pre/sub/f"; printf new > "$d-new/f"; printf old > "$d-old/f"
"""
RENAMES = r"""
mv "$d-pre" "$d-post"                                       # renamed: its files keep their ctime
rm -rf "$d-old" && mv "$d-new" "$d-old"                     # replaced: $d-old/f is $d-new's now
"""

AS_ROOT = HOSTILE + rf"""
rm -rf /etc/default/* && printf refilled > /etc/default/analysis   # empty a dir, refill it
printf '#!/bin/sh\n' > /usr/local/bin/pinger && chmod 755 /usr/local/bin/pinger
{TOOLS_IN_CONTAINER}/setcap cap_net_raw+ep /usr/local/bin/pinger
ln /usr/bin/env /usr/local/bin/env-link                     # a hard link to a file of FROM
"""

AS_USER = HOSTILE + r"""
ln "$HOME/.bashrc" "$d/bashrc-link"                          # a hard link to a file of FROM
"""

# After the build: wait until the test has taken the manifest (the checkout is a mount).
HANDSHAKE = """
touch .lwc-built
for _ in $(seq 1200); do [ -e .lwc-go ] && exit 0; sleep 0.1; done
exit 99
"""

MANIFEST = r"""#!/bin/bash
# manifest ROOT entries|hashes|caps: every path under ROOT, NUL-separated; mounts left out when
# ROOT is / (read from mountinfo)
set -euo pipefail
root=$1 what=$2
cd "$root"
prune=(\( -path ./proc -o -path ./sys -o -path ./dev)
if [ "$root" = / ]; then
  while IFS= read -r m; do
    m=$(printf '%b' "${m//\\/\\0}")
    [ "$m" = / ] || prune+=(-o -path ".$m")
  done < <(awk '{ print $5 }' /proc/self/mountinfo)
fi
prune+=(\) -prune -o)
case $what in
  entries) find . -xdev "${prune[@]}" -printf '%y\0%m\0%U\0%G\0%s\0%i\0%n\0%l\0%p\0' ;;
  hashes) find . -xdev "${prune[@]}" -type f -print0 | xargs -0 -r sha256sum -z ;;
  caps) find . -xdev "${prune[@]}" -type f -print0 | xargs -0 -r "${GETCAP:-getcap}" ;;
  mounts) awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r m; do
            printf '%b\0' "${m//\\/\\0}"; done ;;
esac
"""


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> Path:
    """setcap/getcap (the fixture base has neither; both link only libc and libcap, which it
    has) and the manifest script, lent to containers read-only (a mount: never captured)."""
    directory = tmp_path_factory.mktemp("tools")
    for tool in ("setcap", "getcap"):
        found = shutil.which(tool) or f"/usr/sbin/{tool}"
        shutil.copy2(found, directory / tool)
    (directory / "manifest").write_text(MANIFEST)
    directory.chmod(0o755)
    for parent in directory.parents:   # uid 1000 reaches it through the pytest directories
        if str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o055)
    return directory


@pytest.fixture(scope="module")
def shaped_base(testbed, base, tmp_path_factory) -> str:
    """FROM with the shapes, in the test registry; cached by its recipe's hash."""
    tag = hashlib.sha256((base + SHAPES).encode()).hexdigest()[:12]
    ref = f"{testbed['LWC_TESTBED_REGISTRY']}/lwc-tests/shaped-base:{tag}"
    config = tmp_path_factory.mktemp("shaped-config")
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    testbed.docker("login", "--username", testbed["LWC_TESTBED_USER"], "--password-stdin",
                   testbed["LWC_TESTBED_REGISTRY"], input=testbed.password, env=env)
    if testbed.docker("image", "inspect", ref, check=False).returncode != 0:
        name = f"lwc-shapes-{tag}"
        testbed.docker("rm", "-f", name, check=False)
        testbed.docker("run", "--name", name, "--user", "0", "--network", "none", base, "bash",
                       "-c", SHAPES)
        testbed.docker("commit", "--change", "USER cmsusr", "--change", "WORKDIR /home/cmsusr",
                       "--change", 'CMD ["/bin/bash"]', name, ref)
        testbed.docker("rm", "-f", name)
    testbed.docker("push", ref, env=env)
    return ref


@pytest.fixture
def runner(job, shaped_base, tmp_path):
    runner = Runner(job, shaped_base, tmp_path)
    yield runner
    runner.cleanup()


# -- manifests ---------------------------------------------------------------------------------
def parse(entries: bytes, hashes: bytes, caps: bytes) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, sha256, link target, capabilities); and the hard-link
    groups (paths that share one file) under "<hard links>"."""
    digests = {}
    for record in hashes.split(b"\0"):
        if record:
            digest, _, path = record.partition(b"  ")
            digests[path] = digest.decode()
    capabilities = {}
    for line in caps.split(b"\n"):
        if line.strip():
            path, _, cap = line.rpartition(b" ")
            capabilities[path] = cap.decode()
    fields = entries.split(b"\0")
    out: dict[str, tuple] = {}
    inodes: dict[bytes, list[str]] = {}
    for i in range(0, len(fields) - 8, 9):
        kind, mode, uid, gid, size, inode, links, target, path = fields[i:i + 9]
        name = "/" + os.fsdecode(path)[2:] if path != b"." else "/"
        if kind == b"f" and int(links) > 1:
            inodes.setdefault(inode, []).append(name)
        out[name] = (kind.decode(), mode.decode(), int(uid), int(gid),
                     int(size) if kind == b"f" else 0, digests.get(path),
                     os.fsdecode(target) if kind == b"l" else None, capabilities.get(path))
    out["<hard links>"] = tuple(sorted(tuple(sorted(g)) for g in inodes.values() if len(g) > 1))
    return out


def exec_manifest(runner: Runner, container: str, what: str) -> bytes:
    done = subprocess.run(["docker", "--host", runner.bed["DOCKER_HOST"], "exec", "--user", "0",
                           "-e", f"GETCAP={TOOLS_IN_CONTAINER}/getcap", container, "bash",
                           f"{TOOLS_IN_CONTAINER}/manifest", "/", what],
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout


def in_container(runner: Runner, container: str) -> tuple[dict[str, tuple], list[str]]:
    """The container's manifest, and its mount points (left out of it)."""
    parts = [exec_manifest(runner, container, what) for what in ("entries", "hashes", "caps")]
    mounts = [os.fsdecode(m) for m in exec_manifest(runner, container, "mounts").split(b"\0")
              if m and m != b"/"]
    return parse(*parts), mounts


def on_host(rootfs: Path, tools: Path) -> dict[str, tuple]:
    parts = [subprocess.run(["bash", str(tools / "manifest"), str(rootfs), what],
                            capture_output=True, check=True,
                            env={**os.environ, "GETCAP": str(tools / "getcap")}).stdout
             for what in ("entries", "hashes", "caps")]
    return parse(*parts)


def without(manifest: dict[str, tuple], skip: list[str]) -> dict[str, tuple]:
    def skipped(path: str) -> bool:
        return path == "/" or any(path == s or path.startswith(s.rstrip("/") + "/")
                                  or (s.endswith("*") and path.startswith(s[:-1]))
                                  for s in skip)
    out = {p: v for p, v in manifest.items() if p == "<hard links>" or not skipped(p)}
    out["<hard links>"] = tuple(g for g in manifest["<hard links>"]
                                if not any(skipped(p) for p in g))
    return out


def differences(a: dict[str, tuple], b: dict[str, tuple]) -> dict[str, tuple]:
    return {p: (a.get(p), b.get(p)) for p in set(a) | set(b) if a.get(p) != b.get(p)}


def umoci_rootfs(runner: Runner, ref: str, tmp_path: Path) -> Path:
    """The image as another runtime would apply it: skopeo copy into an OCI layout, then umoci
    unpack as root (which keeps owners and capabilities)."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    layout, bundle = tmp_path / "oci", tmp_path / "bundle"
    creds = f"{runner.bed['LWC_TESTBED_USER']}:{runner.bed.password}"
    subprocess.run(["skopeo", "--policy", str(policy), "copy", "--quiet", "--src-tls-verify=false",
                    "--src-creds", creds, f"docker://{ref}", f"oci:{layout}:x"], check=True,
                   capture_output=True, timeout=300)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:x", str(bundle)], check=True,
                   capture_output=True, timeout=300)
    return bundle / "rootfs"


# -- the differential test ---------------------------------------------------------------------
@pytest.mark.parametrize("user", ["0", "1000"])
def test_both_appliers_give_the_build_containers_filesystem(runner, tools, user, tmp_path):
    build = (AS_ROOT.replace("$1", "/opt/shapes") if user == "0"
             else AS_USER.replace("$1", "/home/cmsusr/base"))
    runner.build_script(build + RENAMES.replace("$d", "/opt/shapes" if user == "0"
                                                else "/home/cmsusr/base") + HANDSHAKE)
    project = str(runner.project)
    name = f"lwc-diff-t{runner.job.token}-{user}"
    runner.containers.append(name)
    volumes = ["-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", "-v", f"{project}:{project}",
               "-v", f"{tools}:{TOOLS_IN_CONTAINER}:ro"]
    # The job container; the capture runs in it as USER: root keeps the engine's default
    # capabilities (setcap needs CAP_SETFCAP), uid 1000 has none (CapEff 0) and no new
    # privileges, as on an unprivileged runner. The manifest is taken by root in the same
    # container, which can read what uid 1000 cannot.
    runner.bed.docker("run", "-d", "--name", name, "--user", "0", "--security-opt",
                      "no-new-privileges", "--network", "none", *volumes, runner.base,
                      "sleep", "3600")
    home = "/root" if user == "0" else "/home/cmsusr"
    shapes = "/opt/shapes" if user == "0" else "/home/cmsusr/base"
    runner.bed.docker("exec", "--user", user, name, "bash", "-c", BEFORE_CAPTURE, "-", shapes)
    capture = subprocess.Popen(["docker", "--host", runner.bed["DOCKER_HOST"], "exec", "--user",
                                user, "-e", f"HOME={home}", "-w", project, name, "bash", CAPTURE],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (runner.project / ".lwc-built").exists():
        assert capture.poll() is None and time.monotonic() < deadline, capture.communicate()
        time.sleep(0.1)
    built, mounts = in_container(runner, name)   # right after the build, before the capture
    (runner.project / ".lwc-go").touch()
    out, err = capture.communicate(timeout=300)
    assert capture.returncode == 0, err[-3000:]

    target = f"{runner.job.repository}:diff{user}"
    published = runner.publish(TO=target)
    assert published.returncode == 0, published.stderr[-3000:]

    # The build container's own: its mounts (left out already), the capture's work directory.
    built = without(built, ["/tmp/lwc-capture.*"])
    assert len(built) > 5000 and built["/opt/shapes/d2f" if user == "0" else
                                         "/home/cmsusr/base/d2f"][0] == "f"
    pull(runner, target)
    check = f"lwc-check-t{runner.job.token}-{user}"
    runner.containers.append(check)
    runner.bed.docker("run", "-d", "--name", check, "--user", "0", "--network", "none",
                      *volumes, target, "sleep", "600")
    pulled, _ = in_container(runner, check)
    assert differences(built, without(pulled, [])) == {}

    # umoci: no engine, so none of what the engine adds to every container (its init layer: the
    # marker and /etc/mtab; the directories it makes for the checkout's mount), nor what its
    # mounts hide
    engine_made = ["/.dockerenv", "/etc/mtab", *[str(p) for p in runner.project.parents
                                    if str(p) not in ("/", "/tmp")]]
    unpacked = on_host(umoci_rootfs(runner, target, tmp_path), tools)
    assert differences(without(built, engine_made), without(unpacked, mounts)) == {}

    # the hostile cases were really there
    d = "/opt/shapes" if user == "0" else "/home/cmsusr/base"
    assert pulled[f"{d}/d2s"][6] == "/usr" and pulled[f"{d}/fifo"][0] == "p"
    assert pulled[f"{d}/suid"][1] == "4755" and f"{d}/new\nline" in pulled
    assert f"{d}/" + "a" * 220 in pulled and f"{d}/" + "L" * 253 not in pulled
    assert os.fsdecode(f"{d}/".encode() + b"bad\xff\xfename") in pulled
    assert not any(p.startswith(f"{d}/py/foo") for p in pulled)
    assert f"{d}-post/sub/f" in pulled and f"{d}-pre" not in pulled
    assert pulled[f"{d}-old/f"][5] == hashlib.sha256(b"new").hexdigest()
    if user == "0":
        assert pulled["/usr/local/bin/pinger"][7] == "cap_net_raw=ep"
        assert ("/usr/bin/env", "/usr/local/bin/env-link") in pulled["<hard links>"]
        assert [p for p in pulled if p.startswith("/etc/default/")] == ["/etc/default/analysis"]
    else:
        assert ("/home/cmsusr/.bashrc", f"{d}/bashrc-link") in pulled["<hard links>"]
    runner.bed.docker("rmi", "-f", target, check=False)


# -- reproducible ------------------------------------------------------------------------------
REPEAT = r"""
set -u
for i in $(seq 30); do
  rm -rf "$HOME/out" "$HOME/copied"
  printf v > "$HOME/victim"; printf l > "$HOME/$(printf 'V%.0s' $(seq 240))"
  bash CAPTURE >/dev/null 2>"$HOME/capture.err" || { cat "$HOME/capture.err" >&2; exit 1; }
  sed -n 's/^ *"digest": "\(.*\)",$/\1/p' lwcontainer-layer.json
done
"""


def test_thirty_captures_of_one_build_under_source_date_epoch_give_one_digest(runner):
    """In one container, each capture from the same before-state: new files (after the epoch,
    clamped), files of 2001 (kept), a deleted file with a long name (a pax record)."""
    runner.build_script("set -e\nmkdir -p $HOME/out && printf result > $HOME/out/r.txt\n"
                        "printf old > $HOME/out/old && touch -d 2001-01-01 $HOME/out/old\n"
                        "cp -a /etc/skel $HOME/copied\nrm $HOME/victim $HOME/VVV*\n")
    project = str(runner.project)
    done = runner.bed.docker("run", "--rm", "--cap-drop", "ALL", "--security-opt",
                             "no-new-privileges", "--network", "none", "--user", "1000",
                             "-e", "SOURCE_DATE_EPOCH=1700000000",
                             "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", "-v", f"{project}:{project}",
                             "-w", project, runner.base, "bash", "-c",
                             REPEAT.replace("CAPTURE", CAPTURE), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = done.stdout.split()
    assert len(digests) == 30 and len(set(digests)) == 1, sorted(set(digests))
    meta = json.loads((runner.project / "lwcontainer-layer.json").read_text())
    assert meta["whiteouts"] == 2 and meta["xattrs"] is True


# -- no secret in a layer ----------------------------------------------------------------------
def test_a_build_that_copies_the_job_token_into_the_image_gets_no_layer(runner):
    token = "glcbt-" + hashlib.sha256(runner.job.token.encode()).hexdigest()[:20]
    # the build's environment is clean, but it runs in the job's process tree: its parent's
    # environment is one read away
    runner.build_script("tr '\\0' '\\n' < /proc/$PPID/environ | sed -n 's/^CI_JOB_TOKEN=//p' "
                        "> /usr/local/share/x\n")
    done, _ = runner.capture(user="0", env={"CI_JOB_TOKEN": token})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the layer would carry the value of CI_JOB_TOKEN (in /usr/local/share/x)" in \
        done.stderr
    assert token not in done.stdout + done.stderr
    assert not (runner.project / "lwcontainer-layer.tar.gz").exists()
    assert not (runner.project / "lwcontainer-layer.json").exists()


# -- the tools of CentOS 7's age ---------------------------------------------------------------
def test_the_capture_with_old_tools_gives_the_same_layer(runner, tmp_path):
    """Shims (test_capture.REFUSED) that refuse what coreutils 8.22, sed 4.2.2, findutils 4.5.11
    and tar 1.26 lack, and hide tar's newer options from its help, put first on PATH."""
    shims = old_tools(tmp_path / "shims")
    for parent in shims.parents:
        if str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o055)
    runner.build_script(AS_USER.replace("$1", "/home/cmsusr/base"))
    names = []
    for path in (None, "/opt/lwc-shims:/usr/local/bin:/usr/bin:/bin"):
        env = {"SOURCE_DATE_EPOCH": "1700000000", **({"PATH": path} if path else {})}
        done, _ = runner.capture(user="1000", env=env,
                                 extra=["-v", f"{shims}:/opt/lwc-shims:ro"])
        assert done.returncode == 0, done.stderr[-3000:]
        assert "old version" not in done.stderr
        import tarfile
        with tarfile.open(runner.project / "lwcontainer-layer.tar.gz") as tar:
            names.append([(m.name, m.mode, m.uid, m.size, m.linkname) for m in tar])
        meta = json.loads((runner.project / "lwcontainer-layer.json").read_text())
        if path:
            assert any("cannot clamp" in note for note in meta["notes"])
    assert names[0] == names[1] and len(names[0]) > 10


# -- one job: the capture is bounded ----------------------------------------------------------
def test_single_job_capture_stops_at_lwc_build_timeout(runner):
    import sys
    import sysconfig
    runner.build_script("sleep 120\n")
    site = sysconfig.get_paths()["purelib"]
    project = str(runner.project)
    python = f"/opt/lwc-python/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    started = time.monotonic()
    done = subprocess.run(
        ["docker", "--host", runner.bed["DOCKER_HOST"], "run", "--rm", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "--network", "none",
         "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", "-v", f"{project}:{project}", "-w", project,
         "-v", f"{sys.base_prefix}:/opt/lwc-python:ro", "-v", f"{site}:/opt/lwc-site:ro",
         "-v", f"{ROOT}:/opt/lwc-src:ro", "-e", "LWC_ENGINE=inplace", "-e", f"FROM={runner.base}",
         "-e", "LWC_BUILD_TIMEOUT=3", "-e", "LWC_PUSH=never", "-e", "LWC_LOG_FORMAT=json",
         "-e", "PYTHONPATH=/opt/lwc-src:/opt/lwc-site", "-e", "PYTHONHOME=/opt/lwc-python",
         "-e", "LD_LIBRARY_PATH=/opt/lwc-python/lib", runner.base, python, "-m", "lwcontainer"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 6, done.stderr[-3000:]
    assert "did not finish within 3s (LWC_BUILD_TIMEOUT)" in done.stderr
    assert time.monotonic() - started < 60
    assert not (runner.project / "lwcontainer-layer.tar.gz").exists()
