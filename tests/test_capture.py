"""The capture script's functions, run by bash on this host against temporary directories (the
script defines them when sourced; ``main`` runs only when it is executed). A temporary root
filesystem is walked, changed by a hostile "build", walked again and turned into a layer with the
script's own functions; the layer is then applied to a copy of the root as an OCI applier does
and the result compared with the changed root, entry by entry. The same layer pipeline runs
with shims of the tools that refuse what CentOS 7's old versions lack. The real runs in
containers of a base are in test_inplace_e2e.py."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from lwcontainer.config import secrets
from lwcontainer.config.settings import Settings
from artifacts import write_artifact
from lwcontainer.engines.inplace.artifact import Layer
from lwcontainer.engines.inplace.capture import render
from lwcontainer.engines.inplace.engine import InplaceEngine
from lwcontainer.errors import BuildError, ConfigError
from lwcontainer.executor import TIMED_OUT, Completed, Executor, Step
from lwcontainer.output.masking import Masker
from lwcontainer.stages import Stages

# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "lwcontainer-capture.sh"
    path.write_text(render())
    return path


def bash(lib: Path, body: str, env: dict | None = None, path: str | None = None,
         user: int | None = None) -> subprocess.CompletedProcess:
    environ = {"PATH": path or os.environ["PATH"], "HOME": "/root", **(env or {})}
    argv = ["bash", "-c", f"source {lib}\n{body}"]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, env=environ, capture_output=True, timeout=120)


def capture(lib: Path, root: Path, build: str, out: Path, env: dict | None = None,
            path: str | None = None, user: int | None = None) -> subprocess.CompletedProcess:
    """Walk ROOT, run BUILD (bash, in ROOT), walk again, write the layer to OUT: the script's
    own steps, with ROOT as the root filesystem and no mounts."""
    (root / "tmp").mkdir(exist_ok=True)
    (root / "proj").mkdir(exist_ok=True)
    (out.parent / "build.sh").write_text(build)
    body = f"""
FS={root}; MOUNTINFO=/dev/null; PROJECT={root}/proj; NOTES=()
WORK=$(mktemp -d {root}/tmp/lwc-capture.XXXXXX) && touch "$WORK/probe" || exit 9
tar_features; prune_setup; walk_before; touch "$WORK/marker"; sleep 0.02
(cd {root} && bash -e {out.parent}/build.sh) || exit 8
walk_after; layer_lists; write_tar; warn_open
cp "$WORK/layer.tar" {out} && rm -rf "$WORK"
printf '%s\\n' "${{TAR_OPTS[@]}}" >{out}.opts
"""
    return bash(lib, body, env, path, user)


def members(layer: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(layer) as tar:
        return tar.getmembers()


def apply(layer: Path, root: Path) -> None:
    """Apply a layer as containerd's and docker's appliers do: a whiteout removes its path, an
    entry replaces what is there unless both are directories, and a parent that is not a
    directory is an error ("mkparent: not a directory")."""
    with tarfile.open(layer) as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            parent, base = os.path.split(name)
            where = root / parent
            if where.is_symlink() or not where.is_dir():
                raise AssertionError(f"mkparent {parent}: not a directory ({member.name!r})")
            if base.startswith(".wh."):
                victim = where / base[4:]
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                elif os.path.lexists(victim):
                    victim.unlink()
                continue
            dest = where / base
            if os.path.lexists(dest) and not (member.isdir() and dest.is_dir()
                                              and not dest.is_symlink()):
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            tar.extract(member, root, filter="fully_trusted")


def tree(root: Path, skip: tuple[str, ...] = ("tmp", "proj")) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, sha256, link target, xattrs), and hard-link groups."""
    out: dict[str, tuple] = {}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            digest = link = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, set()).add(rel)
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(path)
            xattrs = () if stat.S_ISLNK(st.st_mode) else tuple(sorted(
                (k, os.getxattr(path, k)) for k in os.listxattr(path) if k != "security.selinux"))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if digest else 0, digest, link, xattrs)
    out["<hard links>"] = tuple(sorted(tuple(sorted(g)) for g in inodes.values() if len(g) > 1))
    return out


@contextmanager
def a_directory_another_user_can_reach(prefix: str) -> Iterator[Path]:
    """A temporary directory (mode 755, outside root's own 700 temporary tree) for the script
    run as uid 65534; removed afterwards, whatever modes the run left inside it."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run the script as another user")
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        base.chmod(0o755)
        yield base
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base)


LONG = "L" * 253          # its whiteout name (.wh.+253) is longer than a file name may be
LONGISH = "M" * 230
BAD = b"bad\xff\xfename"


def base_root(root: Path) -> None:
    """A small FROM with the shapes the hostile build changes."""
    for d in ("usr/lib/py/foo/sub", "usr/lib/py/foo-1.0.dist-info", "usr/local", "usr/share/quiet",
              "etc/default", "etc/skel", "d2f/sub", "d2s/inner", "refill", "work/build",
              "keepdir", "mv/from/sub", "swap", "swapsrc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    files = {"usr/lib/py/foo/__init__.py": "x", "usr/lib/py/foo/sub/deep.py": "deep",
             "usr/lib/py/foo-1.0.dist-info/RECORD": "r", "etc/default/one": "1",
             "etc/default/two": "2", "etc/skel/.bashrc": "rc", "d2f/sub/f": "f", "f2d": "f",
             "d2s/inner/g": "g", "refill/one": "1", "refill/two": "2", "work/build/o": "o",
             "work/build.log": "log", "usr/share/base-file": "base", "usr/share/quiet/one": "1",
             "usr/share/quiet/two": "2", f"usr/{LONG}": "long", f"usr/{LONGISH}": "longish",
             "etc/old\nline": "nl", "keepdir/k": "k", "mv/from/a": "a", "mv/from/sub/c": "c",
             "swap/f": "old", "swap/gone": "gone", "swapsrc/f": "new", "swapsrc/only": "only"}
    for rel, text in files.items():
        (root / rel).write_text(text)
    os.symlink("usr/share", root / "s2d")


HOSTILE = rf"""
rm -rf usr/lib/py/foo usr/lib/py/foo-1.0.dist-info        # pip uninstall: foo and foo-1.0...
rm -rf work/build work/build.log                             # build and build.log
rm -rf d2f && printf 'now a file' > d2f
rm f2d && mkdir f2d && printf in > f2d/x
rm s2d && mkdir s2d && printf in > s2d/y
rm -rf d2s && ln -s usr d2s
rm -rf etc/default/* && printf refilled > etc/default/analysis
rm -rf refill && mkdir refill && printf again > refill/one
ln usr/share/base-file usr/local/hardlink
printf x > usr/local/suid && chmod 4755 usr/local/suid
mkfifo usr/local/fifo
printf long > "usr/local/$(printf 'a%.0s' $(seq 220))"
rm "usr/{LONG}" "usr/{LONGISH}"
printf b > "usr/local/$(printf 'bad\377\376name')"
printf n > "usr/local/new
line"
rm "etc/old
line"
cp -a etc/skel usr/local/skel-copy
printf old > usr/local/old && touch -d 2001-01-01 usr/local/old
rm usr/share/quiet/one
printf w > usr/local/open && chmod 666 usr/local/open
mkdir usr/local/opendir && chmod 777 usr/local/opendir
mkdir usr/local/sticky && chmod 1777 usr/local/sticky
mv mv/from mv/to                                             # its files keep their ctime
rm -rf swap && mv swapsrc swap                               # swap/f is swapsrc's now
"""


def layer_of(lib: Path, tmp_path: Path, build: str = HOSTILE, env: dict | None = None,
             path: str | None = None) -> tuple[Path, Path, Path, subprocess.CompletedProcess]:
    root, before = tmp_path / "root", tmp_path / "before"
    root.mkdir(parents=True)
    base_root(root)
    subprocess.run(["cp", "-a", f"{root}/.", str(before)], check=True)
    layer = tmp_path / "layer.tar"
    done = capture(lib, root, build, layer, env, path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return root, before, layer, done


# -- the layer ---------------------------------------------------------------------------------
def test_applying_the_layer_to_from_gives_the_built_filesystem(lib, tmp_path):
    root, before, layer, _ = layer_of(lib, tmp_path)
    apply(layer, before)
    after, applied = tree(root), tree(before)
    differs = {p: (after.get(p), applied.get(p)) for p in set(after) | set(applied)
               if after.get(p) != applied.get(p)}
    assert differs == {}
    assert "usr/local/hardlink" in after and after["<hard links>"]  # the cases were there
    assert os.fsdecode(b"usr/local/" + BAD) in after and "usr/local/new\nline" in after
    assert "mv/to/sub/c" in after and after["swap/f"][5] == hashlib.sha256(b"new").hexdigest()


def test_a_name_that_marks_a_deletion_is_refused(lib, tmp_path):
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    (root / "usr" / "libfoo.so").write_text("from FROM")
    done = capture(lib, root, "printf keep > usr/.wh.libfoo.so\n", tmp_path / "layer.tar")
    assert done.returncode == 6
    said = done.stderr.decode()
    assert "the build made /usr/.wh.libfoo.so: names beginning with .wh. mark deletions" in said
    assert not (tmp_path / "layer.tar").exists()


def test_what_the_build_makes_unreadable_is_refused_and_froms_own_is_skipped(lib):
    with a_directory_another_user_can_reach("lwc-unreadable-") as base:
        script, out, root = base / "capture.sh", base / "out", base / "root"
        script.write_text(lib.read_text())
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        for d in ("opt", "tmp", "proj", "private"):
            (root / d).mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        os.chown(root / "opt", 65534, 65534)
        (root / "private").chmod(0o700)    # FROM's own: /root for cmsusr
        (root / "private" / "x").write_text("")
        fine = capture(script, root, "mkdir opt/fine && printf y > opt/fine/y\n",
                       out / "fine.tar", user=65534)
        assert fine.returncode == 0, fine.stderr.decode()
        assert "./opt/fine/y" in {m.name for m in members(out / "fine.tar")}
        hidden = capture(script, root, "mkdir opt/conf && printf cfg > opt/conf/app.cfg "
                                       "&& chmod 644 opt/conf\n", out / "hidden.tar", user=65534)
        assert hidden.returncode == 6
        said = hidden.stderr.decode()
        assert "the build left 1 path(s) the capture cannot read as uid 65534" in said
        assert "./opt/conf/app.cfg" in said and "then rerun" in said
        assert not (out / "hidden.tar").exists()


def test_a_build_that_empties_tmpdir_is_told_so(lib, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    done = capture(lib, root, "rm -rf tmp/*\n", tmp_path / "layer.tar")
    assert done.returncode == 6
    assert "the build removed the capture's work directory" in done.stderr.decode()
    assert "(TMPDIR)" in done.stderr.decode()


def test_whiteouts_only_where_the_parent_is_a_directory_and_before_their_siblings(lib, tmp_path):
    _, _, layer, _ = layer_of(lib, tmp_path)
    names = [os.path.normpath(m.name) for m in members(layer)]
    whiteouts = {n for n in names if os.path.basename(n).startswith(".wh.")}
    assert whiteouts == {"usr/lib/py/.wh.foo", "usr/lib/py/.wh.foo-1.0.dist-info",
                         "work/.wh.build", "work/.wh.build.log", "etc/default/.wh.one",
                         "etc/default/.wh.two", "refill/.wh.two", f"usr/.wh.{LONG}",
                         f"usr/.wh.{LONGISH}", "etc/.wh.old\nline", "usr/share/quiet/.wh.one",
                         "mv/.wh.from", ".wh.swapsrc", "swap/.wh.gone"}
    for name in whiteouts:   # right after the directory's own entry, before anything inside it
        parent = os.path.dirname(name)
        inside = [i for i, n in enumerate(names) if not parent or n.startswith(parent + "/")]
        first_other = min((i for i in inside if names[i] not in whiteouts), default=len(names))
        assert names.index(name) < first_other, name
        if parent:   # the root is no entry: its whiteouts come first of all
            assert names.index(parent) < names.index(name), name
    assert len(names) == len(set(names))


def test_modes_of_world_writable_entries_are_kept_and_named_in_a_warning(lib, tmp_path):
    _, _, layer, done = layer_of(lib, tmp_path)
    modes = {os.path.normpath(m.name): stat.S_IMODE(m.mode) for m in members(layer)}
    assert modes["usr/local/open"] == 0o666 and modes["usr/local/opendir"] == 0o777
    assert modes["usr/local/sticky"] == 0o1777 and modes["usr/local/suid"] == 0o4755
    warning = [line for line in done.stderr.decode().splitlines() if "world-writable" in line]
    assert len(warning) == 1 and "2 world-writable entries" in warning[0]
    assert "/usr/local/open" in warning[0] and "/usr/local/opendir" in warning[0]
    assert "sticky:" not in warning[0] and "/usr/local/sticky" not in warning[0]


def test_extended_attributes_go_into_pax_records_and_selinux_labels_do_not(lib, tmp_path):
    # an access ACL with a named user (one equal to the mode would not be stored)
    acl = bytes.fromhex("02000000" "01000600ffffffff" "02000600e8030000" "04000400ffffffff"
                        "10000600ffffffff" "20000400ffffffff")
    root = tmp_path / "root"
    (root / "usr" / "local").mkdir(parents=True)
    probe = tmp_path / "probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.lwc", b"v")
        os.setxattr(probe, "system.posix_acl_access", acl)
    except OSError as error:
        pytest.skip(f"this filesystem takes no user xattrs or ACLs: {error}")
    caps = os.geteuid() == 0 and shutil.which("setcap")
    build = ("printf x > usr/local/xattrs\n"
             f"{sys.executable} -c \"import os; p = 'usr/local/xattrs'; "
             "os.setxattr(p, 'user.lwc', b'value'); "
             f"os.setxattr(p, 'system.posix_acl_access', bytes.fromhex('{acl.hex()}'))\"\n")
    if caps:
        build += "setcap cap_net_raw+ep usr/local/xattrs\n"
    layer = tmp_path / "layer.tar"
    done = capture(lib, root, build, layer)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    member = next(m for m in members(layer) if m.name == "./usr/local/xattrs")
    records = {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    assert records["SCHILY.xattr.user.lwc"] == "value"
    assert "SCHILY.xattr.system.posix_acl_access" in records
    if caps:
        assert "SCHILY.xattr.security.capability" in records
    assert "--xattrs-exclude=security.selinux" in (tmp_path / "layer.tar.opts").read_text()


def test_a_tar_without_xattrs_says_so_and_the_layer_still_comes(lib, tmp_path):
    shims = old_tools(tmp_path / "shims", tar_xattrs=False)
    root, before, layer, done = layer_of(lib, tmp_path, path=f"{shims}:{os.environ['PATH']}")
    assert "extended attributes (file capabilities, ACLs, user.*) are not carried" in \
        done.stderr.decode()
    apply(layer, before)
    assert tree(root) == tree(before)


# -- the tools CMS bases have ------------------------------------------------------------------
# What each old tool lacks (CentOS 7: coreutils 8.22, findutils 4.5.11, tar 1.26 with Red Hat's
# xattr patch, sed 4.2.2): the shims refuse these options and hide tar's from its help.
REFUSED = {
    "comm": ["-z", "--zero-terminated"],      # coreutils 8.25
    "join": ["-z", "--zero-terminated"],      # coreutils 8.25
    "head": ["-z", "--zero-terminated"],      # coreutils 8.25
    "tail": ["-z", "--zero-terminated"],      # coreutils 8.25
    "cut": ["-z", "--zero-terminated"],       # coreutils 8.25
    "sed": ["-z", "--null-data", "--sandbox", "--debug"],  # sed 4.2.2
    "tar": ["--sort", "--clamp-mtime"],       # tar 1.28, 1.29
    "find": ["-files0-from"],                 # findutils 4.9
}


def old_tools(directory: Path, tar_xattrs: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    hidden = [*REFUSED["tar"], *([] if tar_xattrs else ["--xattrs", "--acls", "--selinux"])]
    for tool, refused in REFUSED.items():
        real = shutil.which(tool)
        refused = hidden if tool == "tar" else refused
        shorts = "".join(o[1] for o in refused if len(o) == 2)
        cases = "|".join(f"{o}|{o}=*" for o in refused if len(o) > 2)
        short_case = (f"-[{shorts}]|-[!-]*[{shorts}]*) refuse \"$a\" ;; " if shorts else "")
        help_filter = ""
        if tool == "tar":
            help_filter = ('[ "${1:-}" = --help ] && { ' + real + ' --help | grep -v -e '
                           + " -e ".join(f"'{o}'" for o in hidden) + "; exit 0; }\n")
        (directory / tool).write_text(
            "#!/bin/bash\n"
            f"refuse() {{ echo \"{tool} (old version): unrecognized option '$1'\" >&2; "
            "exit 64; }\n" + help_filter +
            "for a in \"$@\"; do case $a in " + short_case + f"{cases}) refuse \"$a\" ;; esac; "
            "done\n"
            f"exec {real} \"$@\"\n")
        (directory / tool).chmod(0o755)
    return directory


def test_the_layer_is_the_same_with_the_old_tools_and_needs_none_of_their_missing_options(
        lib, tmp_path):
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    new_root, _, new_layer, _ = layer_of(lib, tmp_path / "new", env=epoch)
    shims = old_tools(tmp_path / "shims")
    old_root, before, old_layer, done = layer_of(lib, tmp_path / "old", env=epoch,
                                                 path=f"{shims}:{os.environ['PATH']}")
    assert "old version" not in done.stderr.decode()
    opts = (tmp_path / "old" / "layer.tar.opts").read_text()
    assert "--clamp-mtime" not in opts and "--xattrs" in opts and "--mtime=@1700000000" in opts
    assert {m.mtime for m in members(old_layer)} == {1700000000}
    apply(old_layer, before)
    assert tree(old_root) == tree(before)
    assert [m.name for m in members(old_layer)] == [m.name for m in members(new_layer)]
    assert tree(new_root) == tree(old_root)


def test_the_shims_do_refuse(tmp_path):
    shims = old_tools(tmp_path / "shims")
    for tool, refused in REFUSED.items():
        for option in refused:
            done = subprocess.run([str(shims / tool), option], capture_output=True, text=True)
            assert done.returncode == 64 and "old version" in done.stderr, (tool, option)
    helped = subprocess.run([str(shims / "tar"), "--help"], capture_output=True, text=True)
    assert "--clamp-mtime" not in helped.stdout and "--transform" in helped.stdout


BASH_43 = {  # what bash 4.2 (CentOS 7) lacks, as it would be written
    "${x@Q}-style transformations": re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*@[QEPAKa]\}"),
    "namerefs": re.compile(r"\b(declare|local|typeset) +-n\b"),
    "negative array subscripts": re.compile(r"\[-[0-9]+\]\}"),
    "wait -n": re.compile(r"\bwait +-n\b"),
    "mapfile/readarray -d": re.compile(r"\b(mapfile|readarray)\b[^\n]* -d\b"),
    "EPOCHSECONDS/EPOCHREALTIME": re.compile(r"EPOCH(SECONDS|REALTIME)"),
    "an empty array expanded bare under set -u": re.compile(r'(?<!\+)"\$\{(NOTES|rename|names|'
                                                           r'USER_SECRET_NAMES)\[@\]\}"'),
}


def test_the_script_uses_nothing_bash_4_2_lacks():
    text = "\n".join(line for line in render().splitlines() if not line.lstrip().startswith("#"))
    found = {what: pattern.findall(text) for what, pattern in BASH_43.items()}
    assert {what: hits for what, hits in found.items() if hits} == {}


@pytest.mark.parametrize("awk", ["gawk", "mawk"])
def test_the_layer_is_the_same_with_gawk_and_mawk(lib, tmp_path, awk):
    """CentOS and AlmaLinux bases have gawk, Debian and Ubuntu ones mawk: each is awk on PATH."""
    real = shutil.which(awk)
    if not real:
        pytest.skip(f"{awk} is not installed (scripts/testbed.sh packages installs it)")
    shims = tmp_path / awk
    shims.mkdir()
    (shims / "awk").symlink_to(real)
    path = f"{shims}:{os.environ['PATH']}"
    said = bash(lib, "awk -W version 2>&1", path=path).stdout.lower()
    assert said.startswith({"gawk": b"gnu awk", "mawk": b"mawk"}[awk])
    root, before, layer, _ = layer_of(lib, tmp_path / "g", path=path)
    apply(layer, before)
    assert tree(root) == tree(before)


def awk_without_nul(directory: Path) -> Path:
    """An awk that loses a NUL inside a line, as mawk 1.3.3 does."""
    directory.mkdir(parents=True, exist_ok=True)
    real = shutil.which("awk")
    (directory / "awk").write_text(
        "#!/bin/bash\nargs=(\"$@\")\nif [ ${#args[@]} -gt 0 ] && [ -f \"${args[-1]}\" ]; then\n"
        "  last=${args[-1]}; unset 'args[-1]'; tr -d '\\0' <\"$last\" | " + real +
        " \"${args[@]}\" -\nelse tr -d '\\0' | " + real + " \"$@\"; fi\n")
    (directory / "awk").chmod(0o755)
    return directory


def test_an_awk_that_loses_nul_bytes_is_refused_only_when_a_name_has_a_newline(lib, tmp_path):
    shims = awk_without_nul(tmp_path / "shims")
    path = f"{shims}:{os.environ['PATH']}"
    root = tmp_path / "plain"
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "x").write_text("")
    done = capture(lib, root, "rm etc/x; printf y > etc/y\n", tmp_path / "plain.tar", path=path)
    assert done.returncode == 0, done.stderr.decode()
    assert {m.name for m in members(tmp_path / "plain.tar")} >= {"./etc/.wh.x", "./etc/y"}
    root = tmp_path / "created"
    root.mkdir()
    done = capture(lib, root, "printf y > 'a\nb'\n", tmp_path / "created.tar", path=path)
    assert done.returncode == 0, done.stderr.decode()
    root = tmp_path / "newline"
    root.mkdir()
    (root / "old").write_text("")
    done = capture(lib, root, "rm old; printf y > 'a\nb'\n", tmp_path / "newline.tar", path=path)
    assert done.returncode == 2
    assert "awk cannot handle a file name with a newline" in done.stderr.decode()


# -- lists -------------------------------------------------------------------------------------
def test_deleted_and_whiteouts_use_set_operations_not_adjacency(lib, tmp_path):
    before = ["./a", "./a/x", "./a-1.0", "./a-1.0/y", "./b", "./b.log", "./c", "./c/d",
              "./c/d/e", "./k", "./k/\0nl"]
    after = ["./b", "./c", "./k"]
    dirs = [".", "./c", "./k"]
    for name, rows in (("before", before), ("after", after), ("dirs", dirs)):
        (tmp_path / name).write_bytes(b"".join(os.fsencode(r) + b"\n" for r in rows))
    done = bash(lib, f"cd {tmp_path} && sort before >b && sort after >a && deleted b a >d "
                     "&& whiteouts d dirs")
    assert done.returncode == 0, done.stderr
    got = [os.fsdecode(line) for line in done.stdout.split(b"\n") if line]
    assert got == ["./a", "./a-1.0", "./b.log", "./c/d", "./k/\0nl"]


def test_mount_points_are_unescaped_and_the_container_check_wants_evidence(lib, tmp_path):
    line = "{n} 1 0:{n} / {mp} rw - {fs} src rw\n"
    host = tmp_path / "host"
    host.write_text(line.format(n=1, mp="/", fs="ext4")
                    + line.format(n=2, mp="/a\\040b", fs="tmpfs"))
    done = bash(lib, f"mount_points {host} | tr '\\0' '|'")
    assert done.stdout.decode() == "/a b|"
    root = tmp_path / "root"
    root.mkdir()
    k8s = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert bash(lib, f"in_container {host} {root}", env=k8s).returncode == 1
    overlay = tmp_path / "overlay"
    overlay.write_text(line.format(n=1, mp="/", fs="overlay"))
    assert bash(lib, f"in_container {overlay} {root}").returncode == 0
    pod = tmp_path / "pod"
    pod.write_text(host.read_text()
                   + line.format(n=3, mp="/var/run/secrets/kubernetes.io/serviceaccount",
                                 fs="tmpfs"))
    assert bash(lib, f"in_container {pod} {root}").returncode == 0
    (root / ".dockerenv").write_text("")
    assert bash(lib, f"in_container {host} {root}").returncode == 0


# -- the job's secrets -------------------------------------------------------------------------
NAMES = ["CI_JOB_TOKEN", "CI_BUILD_TOKEN", "CI_REGISTRY_PASSWORD", "CI_JOB_JWT", "CI_JOB_JWT_V2",
         "CI_DEPLOY_PASSWORD", "CI_REPOSITORY_URL", "DOCKER_AUTH_CONFIG", "GITHUB_TOKEN",
         "my_token", "AWS_SECRET_ACCESS_KEY", "DB_PASSWD", "GOOGLE_CREDENTIALS", "MY_KEY",
         "CI_COMMIT_SHA", "ANALYSIS_NOTE", "LWC_SECRET_VARIABLES", "HOME"]


def test_the_script_and_the_settings_share_one_rule_for_secret_names(lib):
    env = {"LWC_SECRET_VARIABLES": "MY_KEY, OTHER"}
    user = secrets.user_secret_names(env)
    body = ("user_secret_names; for n in " + " ".join(NAMES) + "; do "
            'is_secret_name "$n" "${USER_SECRET_NAMES[@]}" && echo "$n"; done')
    done = bash(lib, body, env=env)
    assert done.stdout.decode().split() == [n for n in NAMES if secrets.is_secret_name(n, user)]
    assert "MY_KEY" in done.stdout.decode() and "HOME" not in done.stdout.decode()


def test_lwc_build_env_refuses_secret_names_of_both_kinds(lib):
    for names, env in (("NOTE my_token", {}), ("NOTE MY_KEY", {"LWC_SECRET_VARIABLES": "MY_KEY"})):
        done = bash(lib, "user_secret_names; build_environment; echo passed",
                    env={"LWC_BUILD_ENV": names, "NOTE": "n", **env})
        assert done.returncode == 2, done.stderr
        assert f"{names.split()[1]} holds a secret and is never passed" in done.stderr.decode()
    done = bash(lib, "user_secret_names; build_environment; printf '%s\\n' \"${BUILD_ENV[@]}\"",
                env={"LWC_BUILD_ENV": "NOTE,OTHER", "NOTE": "n"})
    assert "NOTE=n" in done.stdout.decode().splitlines()


def secret_layer(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "fs"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (tmp_path / "work").mkdir()
    with open(tmp_path / "work" / "files0", "wb") as listing:
        listing.write(b"".join(b"./" + os.fsencode(rel) + b"\0" for rel in files))
    (tmp_path / "work" / "never").write_text(".\n")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp_path / "layer.tar"), *files],
                   check=True)
    return root


def search(lib: Path, tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    return bash(lib, f"FS={tmp_path}/fs; WORK={tmp_path}/work; user_secret_names; "
                     f"collect_secrets; search_secrets {tmp_path}/layer.tar && echo CLEAN",
                env=env)


def test_a_layer_that_carries_the_job_token_is_refused_naming_variable_and_path(lib, tmp_path):
    token = "glcbt-64_Qw3rtyUiop4sdfGh"
    secret_layer(tmp_path, {"usr/local/share/x": b"prefix " + token.encode() + b" suffix",
                            "usr/local/share/ok": b"nothing"})
    done = search(lib, tmp_path, {"CI_JOB_TOKEN": token, "ANALYSIS_NOTE": "not secret"})
    err = done.stderr.decode()
    assert done.returncode == 2 and "CLEAN" not in done.stdout.decode()
    assert "CI_JOB_TOKEN" in err and "/usr/local/share/x" in err and "/share/ok" not in err
    assert token not in err + done.stdout.decode()


def test_user_secrets_and_multi_line_values_are_searched_and_clean_layers_pass(lib, tmp_path):
    auth = '{\n  "auths": {\n    "r.io": {"auth": "dXNlcjpwYXNzd29yZDEyMzQ1"}\n  }\n}'
    secret_layer(tmp_path, {"etc/key": b"k-3456789", "root/.docker/config.json":
                            b'    "r.io": {"auth": "dXNlcjpwYXNzd29yZDEyMzQ1"}\n'})
    user = search(lib, tmp_path, {"LWC_SECRET_VARIABLES": "MY_KEY", "MY_KEY": "k-3456789"})
    assert user.returncode == 2 and "MY_KEY" in user.stderr.decode()
    assert "/etc/key" in user.stderr.decode()
    docker = search(lib, tmp_path, {"DOCKER_AUTH_CONFIG": auth})
    assert docker.returncode == 2 and "DOCKER_AUTH_CONFIG" in docker.stderr.decode()
    clean = search(lib, tmp_path, {"CI_JOB_TOKEN": "elsewhere-123456", "MY_KEY": "k-3456789",
                                   "CI_JOB_JWT": "abc"})   # too short to search for
    assert clean.returncode == 0 and "CLEAN" in clean.stdout.decode(), clean.stderr


# -- feature tests -----------------------------------------------------------------------------
def test_the_tar_feature_test_gives_the_same_options_every_time(lib, tmp_path):
    """Run 60 times: the help text is kept, then read, so no SIGPIPE can flip the answer."""
    (tmp_path / "probe").write_text("")
    body = (f"WORK={tmp_path}; NOTES=(); for i in $(seq 60); do tar_features; "
            "printf '%s ' \"${TAR_OPTS[@]}\"; echo; done | sort | uniq -c")
    done = bash(lib, body, env={"SOURCE_DATE_EPOCH": "1700000000"})
    rows = done.stdout.decode().strip().splitlines()
    assert len(rows) == 1 and rows[0].split()[0] == "60", rows
    assert "--clamp-mtime" in rows[0] and "--mtime=@1700000000" in rows[0]


# -- the whole script, before the build --------------------------------------------------------
def test_an_unwritable_project_is_refused_before_the_build_runs(lib):
    with a_directory_another_user_can_reach("lwc-unwritable-") as base:
        project = base / "project"
        (project / ".gitlab").mkdir(parents=True)
        (base / "open").mkdir()
        (base / "open").chmod(0o777)
        (project / ".gitlab" / "build.sh").write_text(f"touch {base}/open/BUILD-RAN\n")
        overlay = base / "mountinfo"
        overlay.write_text("1 1 0:1 / / rw - overlay overlay rw\n")
        script = base / "capture.sh"
        script.write_text(lib.read_text().replace("MOUNTINFO=/proc/self/mountinfo",
                                                  f"MOUNTINFO={overlay}"))
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "bash", str(script)], cwd=project, capture_output=True,
                              text=True, env={"PATH": os.environ["PATH"], "HOME": "/"},
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"cannot write into the project directory {project} as uid 65534" in done.stderr
        assert done.stderr.rstrip().endswith("then rerun")   # no stray exit code in it
        assert not (base / "open" / "BUILD-RAN").exists()


def test_paths_relative_to_the_captured_root(lib):
    done = bash(lib, 'FS=/; for p in /tmp/x /; do rel "$p" && echo "$REL"; done; '
                     'FS=/r; for p in /r/a /r; do rel "$p" && echo "$REL"; done; '
                     'rel /other || echo outside')
    assert done.stdout.decode().split("\n")[:5] == ["./tmp/x", ".", "./a", ".", "outside"]


# -- the single-job mode -----------------------------------------------------------------------
class Recording(Executor):
    def __init__(self, answer: Completed) -> None:
        super().__init__(Masker([]), backoff=0, out=io.StringIO(), err=io.StringIO())
        self.answer, self.steps = answer, []

    def run(self, step: Step) -> Completed:
        self.steps.append(step)
        return self.answer


def test_the_single_job_capture_is_bounded_by_lwc_build_timeout(tmp_path):
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    settings = Settings.from_mapping({"LWC_ENGINE": "inplace", "FROM": "r.io/cms/base:1",
                                      "HOME": str(tmp_path), "LWC_BUILD_TIMEOUT": "7"},
                                     cwd=tmp_path)
    x = Recording(Completed(TIMED_OUT, "", "lwcontainer: capture did not finish within 7s "
                                           "(LWC_BUILD_TIMEOUT); stopped"))
    engine = InplaceEngine(settings, x, Stages(settings, x.masker, x.out), {"PATH": "/bin"})
    with pytest.raises(BuildError, match="within 7s \\(LWC_BUILD_TIMEOUT\\)"):
        engine.build()
    step = x.steps[0]
    assert (step.timeout, step.timeout_setting, step.program) == (7, "LWC_BUILD_TIMEOUT", "bash")
    assert step.argv[1] == render(settings.build_script)


A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.mark.parametrize("captured,from_,resolved,same", [
    ("r.io/cms/base:1", "r.io/cms/base:1", None, True),
    ("r.io/cms/base:2", "r.io/cms/base:1", None, False),
    ("r.io/cms/other:1", "r.io/cms/base:1", None, False),
    ("not a reference!", "r.io/cms/base:1", None, False),
    (f"r.io/cms/base:1@{A}", f"r.io/cms/base@{A}", None, True),    # one digest, two spellings
    (f"r.io/cms/base:1@{A}", f"r.io/cms/base:1@{B}", None, False),
    (f"r.io/cms/base@{A}", "r.io/cms/base:1", None, True),          # told once FROM resolves
    (f"r.io/cms/base@{A}", "r.io/cms/base:1", A, True),
    (f"r.io/cms/base@{A}", "r.io/cms/base:1", B, False),             # the tag moved away
    ("r.io/cms/base:1", f"r.io/cms/base:1@{A}", None, False),
])
def test_a_layer_captured_in_another_image_than_from_is_not_published(
        tmp_path, captured, from_, resolved, same):
    """The capture records the job's image (CI_JOB_IMAGE); publish compares it with FROM before
    it reads anything from a registry, and a digest with what FROM resolved to."""
    write_artifact(tmp_path, captured_in=captured)
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "build.sh").write_text("true\n")
    settings = Settings.from_mapping({"LWC_ENGINE": "inplace", "FROM": from_,
                                      "HOME": str(tmp_path)}, cwd=tmp_path)
    x = Recording(Completed(0, "", ""))
    engine = InplaceEngine(settings, x, Stages(settings, x.masker, x.out), {"PATH": "/bin"})
    engine._publisher = None   # nothing may be asked of a registry before the check
    layer = Layer.read(tmp_path)
    if same:
        engine.same_base(layer, resolved)
        return
    with pytest.raises(ConfigError, match="would be published onto another base") as caught:
        engine.same_base(layer, resolved)
    assert caught.value.setting == "FROM" and repr(captured) in str(caught.value)


def test_the_capture_records_the_image_it_ran_in(lib, tmp_path):
    body = ('WORK=$(mktemp -d); SCRIPT=b.sh; DIFF_ID=sha256:x; XATTRS=true; NOTES=(); '
            'write_meta sha256:y 1 2 3 4 5 && cat "$WORK/layer.json"; rm -rf "$WORK"')
    for env, expected in (({"CI_JOB_IMAGE": "r.io/a:1", "FROM": "r.io/b:1"}, "r.io/a:1"),
                          ({"FROM": "r.io/b:1"}, "r.io/b:1"), ({}, "")):
        done = bash(lib, body, env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["captured_in"] == expected


def test_only_what_the_build_made_unreadable_stops_the_capture(lib, tmp_path):
    """find's complaints after the build against those before it: a file that vanished during
    the walk (a process the build left running) is no reason to refuse; a new "Permission
    denied" is."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "before.err").write_text("find: './root': Permission denied\n")
    (work / "after.err").write_text("find: './root': Permission denied\n"
                                    "find: './opt/tmp/x.o': No such file or directory\n")
    done = bash(lib, f"WORK={work}; unreadable && echo fine")
    assert done.returncode == 0 and done.stdout == b"fine\n", done.stderr
    (work / "after.err").write_text("find: './opt/conf': Permission denied\n"
                                    "find: './root': Permission denied\n")
    done = bash(lib, f"WORK={work}; unreadable && echo fine")
    assert done.returncode == 6 and b"./opt/conf" in done.stderr and b"./root" not in done.stderr
