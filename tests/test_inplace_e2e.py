"""The in-place engine on the real test bed: the capture runs in a container of FROM pulled from
the test registry, as an unprivileged CI runner would run it (no capabilities, no new
privileges, no network, /cvmfs read-only, the checkout bind-mounted, no engine socket); publish
runs with no Docker engine reachable at all (a `docker` on PATH that only records a call)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from dotenv import dotenv_values

from conftest import PYTHONPATH, ROOT, free_port, own_registry
from lwcontainer.engines.inplace.capture import render

FIXTURE_CVMFS = ROOT / "tests" / "fixtures" / "cvmfs"
CAPTURE = ".gitlab/lwcontainer-capture.sh"


class Runner:
    """One in-place pipeline: a checkout, the capture job in FROM, the publish job here."""

    def __init__(self, job, base: str, tmp_path: Path) -> None:
        self.job, self.bed, self.base = job, job.bed, base
        self.tmp = tmp_path
        self.project = job.project
        (self.project / CAPTURE).write_text(render())
        self.containers: list[str] = []
        self.fake_bin = tmp_path / "no-engine"
        self.fake_bin.mkdir()
        self.docker_called = tmp_path / "docker-was-called"
        fake = self.fake_bin / "docker"
        fake.write_text(f"#!/bin/sh\ntouch {self.docker_called}\nexit 99\n")
        fake.chmod(0o755)

    def build_script(self, text: str) -> None:
        path = self.project / ".gitlab" / "build.sh"
        path.write_text(text)
        path.chmod(0o777)

    def capture(self, user: str = "", env: dict | None = None, keep: bool = False,
                extra: list[str] | tuple[str, ...] = ()):
        """Job 1, as a Kubernetes runner with /cvmfs would run it (EXTRA: more run options)."""
        name = f"lwc-capture-t{self.job.token}-{secrets.token_hex(3)}"
        self.containers.append(name)
        project = str(self.project)
        args = ["run", "--name", name, "--cap-drop", "ALL", "--security-opt",
                "no-new-privileges", "--network", "none",
                "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", "-v", f"{project}:{project}", "-w", project]
        if user:
            args += ["--user", user]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        done = self.bed.docker(*args, *extra, self.base, "bash", CAPTURE, check=False)
        if not keep:
            self.bed.docker("rm", "-f", name, check=False)
        return done, name

    def publish(self, *args: str, **overrides: str | None):
        """Job 2: no engine reachable (DOCKER_HOST nowhere, `docker` records and fails)."""
        env = {
            "PATH": f"{self.fake_bin}:{os.environ['PATH']}",
            "HOME": str(self.job.home),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "LWC_LOG_FORMAT": "json",
            "LWC_ENGINE": "inplace",
            "FROM": self.base,
            "TO": f"{self.job.repository}:one",
            "CI_REGISTRY": self.bed["LWC_TESTBED_REGISTRY"],
            "CI_REGISTRY_USER": self.bed["LWC_TESTBED_USER"],
            "CI_JOB_TOKEN": self.bed.password,
            "LWC_PUSH_RETRIES": "1",
            **PYTHONPATH,  # this checkout's lwcontainer
        }
        env.update(overrides)
        env = {k: v for k, v in env.items() if v is not None}
        done = subprocess.run([sys.executable, "-m", "lwcontainer", "publish", *args],
                              cwd=self.project, env=env, capture_output=True, timeout=300)
        from conftest import Result
        return Result(done.returncode, done.stdout.decode(errors="replace"),
                      done.stderr.decode(errors="replace"))

    def layer_names(self) -> list[str]:
        with tarfile.open(self.project / "lwcontainer-layer.tar.gz") as tar:
            return tar.getnames()

    def cleanup(self) -> None:
        for name in self.containers:
            self.bed.docker("rm", "-f", name, check=False)


@pytest.fixture
def runner(job, base, tmp_path):
    runner = Runner(job, base, tmp_path)
    yield runner
    runner.cleanup()


def pull(runner: Runner, ref: str) -> None:
    env = {**os.environ, "DOCKER_CONFIG": str(runner.tmp / "verifier")}
    runner.bed.docker("login", "--username", runner.bed["LWC_TESTBED_USER"], "--password-stdin",
                      runner.bed["LWC_TESTBED_REGISTRY"], input=runner.bed.password, env=env)
    runner.bed.docker("pull", "-q", ref, env=env)


def inspect(runner: Runner, ref: str) -> dict:
    return json.loads(runner.bed.docker("image", "inspect", ref).stdout)[0]


# -- the whole journey -------------------------------------------------------------------------
def test_unprivileged_capture_and_engineless_publish_give_a_runnable_image(runner):
    build = (runner.project / ".gitlab" / "build.sh").read_text()
    runner.build_script(build + "rm -f /home/cmsusr/.bash_logout\n")  # a file of the base
    done, _ = runner.capture()
    assert done.returncode == 0, done.stderr[-3000:]
    assert ">> Done building" in done.stdout
    names = runner.layer_names()
    assert "./home/cmsusr/.wh..bash_logout" in names
    project = str(runner.project).lstrip("/")
    for forbidden in ("cvmfs", "etc/hosts", "etc/resolv.conf", "etc/hostname", project):
        assert not any(n.lstrip("./").startswith(forbidden) for n in names), forbidden

    published = runner.publish(CI_PROJECT_URL="https://gitlab.example/me/ana",
                               CI_COMMIT_SHA="c0ffee12" + "0" * 32, LWC_EXTRA_TAGS="latest")
    assert published.returncode == 0, published.stderr[-3000:]
    assert not runner.docker_called.exists()
    assert published.stages() == ["commit", "push", "report"]
    report = dotenv_values(runner.project / "lwcontainer.env")
    target = f"{runner.job.repository}:one"
    assert report["LWC_TAGS"] == f"{target},{runner.job.repository}:latest"

    pull(runner, target)
    image, base = inspect(runner, target), inspect(runner, runner.base)
    assert len(image["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    assert image["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
    for key in ("Cmd", "WorkingDir", "Env", "User", "Entrypoint"):
        assert image["Config"][key] == base["Config"][key], key
    labels = image["Config"]["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://gitlab.example/me/ana"
    assert labels["org.opencontainers.image.base.name"] == runner.base
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert image["Id"] == report["LWC_IMAGE_ID"]
    assert report["LWC_IMAGE_DIGEST"] in image["RepoDigests"]

    ran = runner.bed.docker("run", "--rm", "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", target, "bash",
                            "-c", "myanalysis=$(ls /home/cmsusr/CMSSW_*/bin/*/myanalysis); "
                                  "$myanalysis; ls -a /home/cmsusr; ls /cvmfs | wc -l; "
                                  f"test -e {runner.project} && echo CHECKOUT-PRESENT || true",
                            check=False)
    assert ran.returncode == 0, ran.stderr
    assert "built against CMSSW_10_6_8_patch1 from fixture CVMFS" in ran.stdout
    assert ".bash_logout" not in ran.stdout and ".bashrc" in ran.stdout
    assert "CHECKOUT-PRESENT" not in ran.stdout
    runner.bed.docker("rmi", "-f", target, f"{runner.job.repository}:latest", check=False)


# -- faithful ----------------------------------------------------------------------------------
HOSTILE = r"""
d=$1
mkdir -p "$d/hostile"
printf 'nl' > "$d/hostile/new
line"
printf 'sp' > "$d/hostile/with space"
printf 'bin' > "$d/hostile/$(printf 'bad\377\376name')"
ln -s ../../../../../etc/passwd "$d/hostile/escapes"
ln -s /etc/shadow "$d/hostile/absolute"
printf 'linked' > "$d/hostile/first" && ln "$d/hostile/first" "$d/hostile/second"
"""

AS_ROOT = "set -e\n" + HOSTILE + r"""
mkdir -p /usr/local/lib/analysis && printf 'x' > /usr/local/lib/analysis/x.so
chmod 4750 /usr/local/lib/analysis/x.so
printf 'analysis: 1\n' > /etc/analysis.conf
rm -rf /usr/local/games && printf 'now a file' > /usr/local/games
rm -rf /etc/default/* && printf 'refilled' > /etc/default/analysis
rm -f /etc/debian_version
"""

AS_USER = "set -e\n" + HOSTILE + r"""
mkdir -p "$HOME/bin" && cp -a /etc/skel "$HOME/skel-copy"
printf '#!/bin/sh\necho hi\n' > "$HOME/bin/tool" && chmod 755 "$HOME/bin/tool"
rm -f "$HOME/.bash_logout"
"""


def entries(stream: io.BufferedIOBase, skip: tuple[str, ...]) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, size, sha256, link target) of a filesystem export."""
    out = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            path = "/" + member.name.lstrip("./").rstrip("/")
            if path == "/" or any(path == s or path.startswith(s + "/") for s in skip):
                continue
            digest = None
            if member.isfile():
                digest = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
            link = member.linkname if (member.issym() or member.islnk()) else None
            kind = "file" if member.islnk() else member.type  # a hard link is a file's name
            if member.islnk():
                link = None
            out[path] = (kind, stat.S_IMODE(member.mode), member.uid, member.gid,
                         member.size if member.isfile() else 0, digest, link)
    return out


def export(runner: Runner, container: str, skip: tuple[str, ...]) -> dict[str, tuple]:
    proc = subprocess.Popen(["docker", "--host", runner.bed["DOCKER_HOST"], "export", container],
                            stdout=subprocess.PIPE)
    try:
        return entries(proc.stdout, skip)
    finally:
        proc.stdout.close()
        proc.wait()


@pytest.mark.parametrize("user,script,home", [("0", AS_ROOT, "/root"),
                                              ("1000", AS_USER, "/home/cmsusr")])
def test_the_pushed_image_is_the_build_containers_filesystem(runner, user, script, home):
    runner.build_script(script.replace("$1", home) if user == "0" else
                        script.replace("d=$1", "d=$HOME"))
    done, container = runner.capture(user=user, keep=True)
    assert done.returncode == 0, done.stderr[-3000:]
    published = runner.publish(TO=f"{runner.job.repository}:u{user}")
    assert published.returncode == 0, published.stderr[-3000:]
    target = f"{runner.job.repository}:u{user}"
    pull(runner, target)
    created = runner.bed.docker("create", target).stdout.strip()
    runner.containers.append(created)
    # What the runner mounted, and the directories docker made for those mounts, are not the
    # build's: the checkout's parents, /cvmfs, the files docker bind-mounts, the engine's marker.
    mounts = [str(runner.project), "/cvmfs", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
              "/.dockerenv", "/proc", "/sys", "/dev"]
    parents = [str(p) for p in runner.project.parents if str(p) != "/"]
    skip = tuple(mounts + [p for p in parents if p not in ("/tmp",)])
    after_build, pushed = export(runner, container, skip), export(runner, created, skip)
    differs = {p: (after_build.get(p), pushed.get(p)) for p in set(after_build) | set(pushed)
               if after_build.get(p) != pushed.get(p)}
    assert differs == {}
    assert len(pushed) > 5000  # the whole filesystem was compared, not just the new layer
    hostile = f"{home}/hostile"
    assert pushed[f"{hostile}/escapes"][6] == "../../../../../etc/passwd"
    assert f"{hostile}/new\nline" in pushed and f"{hostile}/with space" in pushed
    assert any(p.startswith(f"{hostile}/bad") for p in pushed)
    if user == "0":
        assert pushed["/usr/local/games"][0] == tarfile.REGTYPE
        assert pushed["/usr/local/lib/analysis/x.so"][1:4] == (0o4750, 0, 0)
        assert [p for p in pushed if p.startswith("/etc/default/")] == ["/etc/default/analysis"]
        assert "/etc/debian_version" not in pushed
    runner.bed.docker("rmi", "-f", target, check=False)


# -- reproducible ------------------------------------------------------------------------------
def test_two_captures_of_the_same_build_give_the_same_layer(runner, job):
    runner.build_script("set -e\nmkdir -p $HOME/out && printf 'result' > $HOME/out/r.txt\n"
                        "cp -a /etc/skel $HOME/copied\n")
    digests = []
    for _ in range(2):
        done, _ = runner.capture(env={"SOURCE_DATE_EPOCH": "1700000000"})
        assert done.returncode == 0, done.stderr[-2000:]
        meta = json.loads((runner.project / "lwcontainer-layer.json").read_text())
        digests.append((meta["digest"], meta["diff_id"]))
    assert digests[0] == digests[1]


# -- where the base layers come from ----------------------------------------------------------
def test_same_registry_mounts_the_base_layers_and_uploads_only_the_new_ones(runner):
    done, _ = runner.capture()
    assert done.returncode == 0, done.stderr[-2000:]
    published = runner.publish()
    assert published.returncode == 0, published.stderr[-3000:]
    moved = published.events("publish_transfer")[0]
    layer = json.loads((runner.project / "lwcontainer-layer.json").read_text())
    assert moved["blobs_copied"] == 0 and moved["blobs_mounted"] >= 1
    assert moved["blobs_uploaded"] == 2
    # layer + config + manifest: nothing of the 400 MB base
    assert moved["bytes_sent"] < layer["size"] + 20_000


def test_base_on_another_registry_is_streamed_once_then_skipped(runner, tmp_path):
    port = free_port()
    other = f"127.0.0.1:{port}"
    with own_registry(runner.job, tmp_path, port, readonly=False,
                      anonymous_storage=tmp_path / "other-storage"):
        base = f"{other}/cms/base:1"
        runner.bed.docker("tag", runner.base, base)
        runner.bed.docker("push", "-q", base)
        runner.bed.docker("rmi", base)
        done, _ = runner.capture()
        assert done.returncode == 0, done.stderr[-2000:]
        first = runner.publish(FROM=base)
        assert first.returncode == 0, first.stderr[-3000:]
        assert first.events("publish_transfer")[0]["blobs_copied"] >= 1
        second = runner.publish(FROM=base, TO=f"{runner.job.repository}:two")
        assert second.returncode == 0, second.stderr[-3000:]
        moved = second.events("publish_transfer")[0]
        assert moved["blobs_copied"] == 0 and moved["blobs_present"] >= 1


def test_token_auth_asks_one_token_for_both_repositories_and_mounts(runner, tmp_path):
    """GitLab's registry answers with a Bearer challenge: the publish asks one token scoped
    repository:FROM:pull and repository:TO:pull,push, so the base layers are mounted."""
    from tokenserver import ISSUER, SERVICE, TokenService
    service = TokenService(tmp_path, runner.bed["LWC_TESTBED_USER"], runner.bed.password)
    realm = service.start(free_port())
    port = free_port()
    auth = (f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {service.cert}\n")
    try:
        with own_registry(runner.job, tmp_path, port, readonly=False, auth=auth):
            registry = f"127.0.0.1:{port}"
            base = runner.base.replace(runner.bed["LWC_TESTBED_REGISTRY"], registry)
            done, _ = runner.capture()
            assert done.returncode == 0, done.stderr[-2000:]
            target = f"{registry}/lwc-tests/token-{runner.job.token}"
            published = runner.publish(CI_REGISTRY=registry, FROM=base, TO=f"{target}:one")
            assert published.returncode == 0, published.stderr[-3000:]
            refused = runner.publish(CI_REGISTRY=registry, FROM=base, TO=f"{target}:two",
                                     CI_JOB_TOKEN="wrong")
    finally:
        service.stop()
    moved = published.events("publish_transfer")[0]
    assert moved["blobs_mounted"] >= 1 and moved["blobs_copied"] == 0
    from_repo = base.split("/", 1)[1].rsplit(":", 1)[0]
    asked = [set(r["scopes"]) for r in service.requests if r["authenticated"]]
    assert {f"repository:{from_repo}:pull",
            f"repository:{target.split('/', 1)[1]}:pull,push"} in asked
    assert refused.returncode == 4, refused.stderr[-2000:]


# -- faults ------------------------------------------------------------------------------------
def test_wrong_password_exits_4(runner):
    done, _ = runner.capture()
    assert done.returncode == 0
    refused = runner.publish(CI_JOB_TOKEN="not-the-password")
    assert refused.returncode == 4, refused.stderr[-2000:]
    assert "not-the-password" not in refused.stderr


def test_read_only_registry_exits_8_after_retries_and_keeps_the_layer(runner, tmp_path):
    done, _ = runner.capture()
    assert done.returncode == 0
    layer = runner.project / "lwcontainer-layer.tar.gz"
    before = hashlib.sha256(layer.read_bytes()).hexdigest()
    port = free_port()
    with own_registry(runner.job, tmp_path, port, readonly=True):
        registry = f"127.0.0.1:{port}"
        base = runner.base.replace(runner.bed["LWC_TESTBED_REGISTRY"], registry)
        failed = runner.publish(CI_REGISTRY=registry, FROM=base,
                                TO=f"{registry}/lwc-tests/readonly:{runner.job.token}",
                                LWC_PUSH_RETRIES="2")
    assert failed.returncode == 8, failed.stderr[-3000:]
    assert len(failed.events("retry")) == 2
    assert "lwcontainer publish" in failed.events("failed")[-1]["error"]
    assert hashlib.sha256(layer.read_bytes()).hexdigest() == before


def test_failing_build_exits_with_its_code_and_writes_no_layer(runner):
    runner.build_script("echo partial > $HOME/partial\nexit 7\n")
    done, _ = runner.capture()
    assert done.returncode == 7
    assert "exited with code 7" in done.stderr
    assert not (runner.project / "lwcontainer-layer.tar.gz").exists()
    assert not (runner.project / "lwcontainer-layer.json").exists()


def test_capture_refuses_to_run_outside_a_container(runner, tmp_path):
    """A root filesystem that is no container's (no engine marker, not an overlay): a chroot
    with nothing but bash and awk, as a host looks to the script."""
    root = tmp_path / "host"
    for tool in ("bash", "awk"):
        program = Path(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                                      text=True).stdout.strip()).resolve()
        libraries = subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
        for path in [program, *(Path(word) for word in libraries.split() if word.startswith("/"))]:
            (root / path.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.relative_to("/")).write_bytes(path.read_bytes())
            (root / path.relative_to("/")).chmod(0o755)
        (root / "bin").mkdir(exist_ok=True)
        (root / "bin" / tool).write_bytes(program.read_bytes())
        (root / "bin" / tool).chmod(0o755)
    project = root / "project"
    (project / ".gitlab").mkdir(parents=True)
    (project / CAPTURE).write_text(render())
    (project / ".gitlab" / "build.sh").write_text("echo BUILD-RAN\n")
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    done = subprocess.run([chroot, str(root), "/bin/bash", "-c", f"cd /project && bash {CAPTURE}"],
                          capture_output=True, text=True, env={"PATH": "/bin"})
    assert done.returncode == 2, done.stderr
    assert "refusing to run outside a container" in done.stderr
    assert "BUILD-RAN" not in done.stdout


# -- one job, where FROM has a Python lwcontainer runs on ---------------------------------------
def test_single_job_mode_captures_and_publishes_inside_from(runner):
    """LWC_ENGINE=inplace python3 -m lwcontainer, in the job container itself: this test's own
    Python and lwcontainer are lent to the container read-only (mounts are never captured)."""
    import sysconfig
    target = f"{runner.job.repository}:single"
    site = sysconfig.get_paths()["purelib"]
    project = str(runner.project)
    env = {"LWC_ENGINE": "inplace", "FROM": runner.base, "TO": target, "LWC_LOG_FORMAT": "json",
           "CI_REGISTRY": runner.bed["LWC_TESTBED_REGISTRY"],
           "CI_REGISTRY_USER": runner.bed["LWC_TESTBED_USER"],
           "PYTHONPATH": "/opt/lwc-src:/opt/lwc-site", "PYTHONHOME": "/opt/lwc-python",
           "LD_LIBRARY_PATH": "/opt/lwc-python/lib"}
    args = ["run", "--rm", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--network", "host", "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro",
            "-v", f"{project}:{project}", "-w", project,
            "-v", f"{sys.base_prefix}:/opt/lwc-python:ro", "-v", f"{site}:/opt/lwc-site:ro",
            "-v", f"{ROOT}:/opt/lwc-src:ro", "-e", "CI_JOB_TOKEN"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    python = f"/opt/lwc-python/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run(["docker", "--host", runner.bed["DOCKER_HOST"], *args, runner.base,
                           python, "-m", "lwcontainer"], capture_output=True, text=True,
                          env={**os.environ, "CI_JOB_TOKEN": runner.bed.password}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = [json.loads(line)["stage"] for line in done.stderr.splitlines()
              if line.startswith("{") and '"stage_done"' in line and '"ok"' in line]
    assert stages == ["capture", "commit", "push", "report"]
    assert runner.bed.password not in done.stdout + done.stderr
    pull(runner, target)
    ran = runner.bed.docker("run", "--rm", "-v", f"{FIXTURE_CVMFS}:/cvmfs:ro", target, "bash",
                            "-c", "$(ls /home/cmsusr/CMSSW_*/bin/*/myanalysis); "
                                  "test -e /opt/lwc-src && echo LENT-PYTHON-CAPTURED || true")
    assert "built against CMSSW_10_6_8_patch1 from fixture CVMFS" in ran.stdout
    assert "LENT-PYTHON-CAPTURED" not in ran.stdout
    runner.bed.docker("rmi", "-f", target, check=False)


def test_the_capture_passes_named_variables_and_never_a_secret(runner):
    runner.build_script('echo "note=${ANALYSIS_NOTE:-unset} job=${CI_JOB_TOKEN:-unset}"\n')
    done, _ = runner.capture(env={"LWC_BUILD_ENV": "ANALYSIS_NOTE", "ANALYSIS_NOTE": "v2",
                                  "CI_JOB_TOKEN": "job-secret"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "note=v2 job=unset" in done.stdout  # named ones in, the job's variables out
    refused, _ = runner.capture(env={"LWC_BUILD_ENV": "ANALYSIS_NOTE my_token",
                                     "my_token": "x"})
    assert refused.returncode == 2 and "my_token holds a secret" in refused.stderr


# -- an artifact from another job is checked before anything is sent ---------------------------
def hostile_artifact(project: Path, outside: Path, lie: str) -> None:
    from artifacts import LAYER, META, write_artifact
    if lie == "link":  # a consistent description of a file outside the project
        outside.mkdir()
        meta = write_artifact(outside)
        (project / LAYER).symlink_to(outside / LAYER)
        (project / META).write_text(json.dumps(meta))
    elif lie == "diff_id":
        write_artifact(project, diff_id="sha256:" + "0" * 64)
    elif lie == "negative":
        write_artifact(project, uncompressed_size=-1)
    elif lie == "other-base":   # captured in another image than FROM (the job's image:)
        write_artifact(project, captured_in="registry.example/cms/other-base:1")
    else:  # a layer whose stream is cut short, described with its own digest and size
        import gzip
        from artifacts import layer_tar
        data = gzip.compress(layer_tar(), mtime=0)[:-9]
        write_artifact(project, compressed=data)


@pytest.mark.parametrize("lie", ["link", "diff_id", "negative", "truncated", "other-base"])
def test_a_hostile_artifact_exits_2_and_the_registrys_log_shows_no_upload(runner, tmp_path, lie):
    """The real registry (an instance of the bed's, on its storage and passwords) logs every
    request: after a hostile artifact there is no upload in it; after a good one there is."""
    from artifacts import write_artifact
    hostile_artifact(runner.project, tmp_path / "outside", lie)
    log, port = tmp_path / "access.log", free_port()
    with own_registry(runner.job, tmp_path, port, readonly=False, access_log=log):
        registry = f"127.0.0.1:{port}"
        settings = {"CI_REGISTRY": registry,
                    "FROM": runner.base.replace(runner.bed["LWC_TESTBED_REGISTRY"], registry),
                    "TO": f"{registry}/lwc-tests/hostile-{runner.job.token}:{lie}"}
        refused = runner.publish(**settings)
        after_refusal = log.read_text()
        reported = (runner.project / "lwcontainer.env").exists()
        for name in ("lwcontainer-layer.tar.gz", "lwcontainer-layer.json"):
            (runner.project / name).unlink()
        write_artifact(runner.project)
        control = runner.publish(**settings)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "nothing was uploaded" in refused.events("failed")[0]["error"]
    assert not reported
    written = [line for line in after_refusal.splitlines()
               if any(f'"{m} ' in line for m in ("POST", "PUT", "PATCH", "DELETE"))]
    assert written == []
    assert control.returncode == 0, control.stderr[-3000:]
    assert '"PUT /v2/lwc-tests/hostile-' in log.read_text()  # the log does record uploads
