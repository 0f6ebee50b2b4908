"""CI integration on the real test bed: GitLab sections and tags in a real run, and the dind TLS
connection against a second engine listening on a loopback TCP port with openssl certificates."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

STAGES = ["wait-daemon", "login", "pull", "automounter", "cvmfs", "build", "commit", "tag",
          "push", "report"]


def manifest_digest(job, repository_path: str, tag: str) -> str:
    registry = job.bed["LWC_TESTBED_REGISTRY"]
    done = subprocess.run(
        ["curl", "-sfI", "-u", f"{job.bed['LWC_TESTBED_USER']}:{job.bed.password}",
         "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json",
         f"http://{registry}/v2/{repository_path}/manifests/{tag}"],
        capture_output=True, text=True, check=True)
    return re.search(r"(?i)docker-content-digest:\s*(\S+)", done.stdout).group(1)


def test_gitlab_run_has_a_section_per_stage_and_one_digest_for_every_tag(job):
    result = job.run(GITLAB_CI="true", CI="true", CI_COMMIT_BRANCH="main",
                     CI_DEFAULT_BRANCH="main", CI_COMMIT_TAG="v1.0/rc1",
                     SOURCE_DATE_EPOCH="1700000000")
    assert result.returncode == 0, result.stderr[-3000:]
    starts = re.findall(r"\x1b\[0Ksection_start:(\d+):lwc_([\w.-]+?)(\[collapsed=true\])?\r"
                        r"\x1b\[0K", result.stdout)
    ends = re.findall(r"\x1b\[0Ksection_end:(\d+):lwc_([\w.-]+)\r\x1b\[0K", result.stdout)
    assert sorted(name for _, name, _ in starts) == sorted(STAGES)
    assert sorted(name for _, name in ends) == sorted(STAGES)
    collapsed = {name: bool(flag) for _, name, flag in starts}
    assert collapsed.pop("build") is False and all(collapsed.values())
    # Sections do not overlap: every start is closed before the next one opens.
    order = re.findall(r"section_(start|end):\d+:lwc_([\w.-]+?)[\[\r]", result.stdout)
    assert len(order) % 2 == 0
    for (kind, name), (next_kind, next_name) in zip(order[::2], order[1::2], strict=True):
        assert (kind, next_kind, name) == ("start", "end", next_name)
    # The build's output sits in the build section.
    build = result.stdout.split("section_start")[[n for _, n, _ in starts].index("build") + 1]
    assert ">> Done building" in build
    # JSON log lines stay JSON.
    assert all(json.loads(line) for line in result.stderr.splitlines() if line.startswith("{"))

    path = f"lwc-tests/ana-{job.token}"
    digests = {tag: manifest_digest(job, path, tag) for tag in ("c0ffee12", "latest", "v1.0-rc1")}
    assert len(set(digests.values())) == 1
    report = dict(line.split("=", 1) for line in
                  (job.project / "lwcontainer.env").read_text().splitlines())
    assert report["LWC_TAGS"].split(",") == [f"{job.repository}:{t}" for t in digests]
    assert report["LWC_IMAGE_DIGEST"] == f"{job.repository}@{digests['latest']}"
    labels = json.loads(job.bed.docker("image", "inspect", f"{job.repository}:latest").stdout
                        )[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


# -- dind TLS --------------------------------------------------------------------------------
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as dind writes them."""
    server, client = directory / "server", directory / "client-made"
    server.mkdir(parents=True)
    client.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lwc-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                          "extendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, target, ext in (("server", server, "server.ext"), ("client", client, "client.ext")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(target / "key.pem"), "-out", f"{name}.csr", cwd=directory)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", str(target / "cert.pem"),
                cwd=directory)
        shutil.copy(directory / "ca.pem", target / "ca.pem")
    return server, client


@pytest.fixture(scope="module")
def tls_engine(testbed, tmp_path_factory):
    """A second engine on tcp://127.0.0.1:2376 that only talks TLS with a client certificate."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 2376)) == 0:
            pytest.fail("port 2376 is taken on this machine")
    root = tmp_path_factory.mktemp("tls-engine")
    server, client = make_certificates(root / "pki")
    # A bridge of its own (--bridge=none would make dockerd delete the host's docker0).
    bridge = f"lwc-br-tls{os.getpid() % 1000}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.213.80.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    proc = subprocess.Popen(
        ["dockerd", "--host", "tcp://127.0.0.1:2376", "--tlsverify",
         "--tlscacert", str(server / "ca.pem"), "--tlscert", str(server / "cert.pem"),
         "--tlskey", str(server / "key.pem"), "--data-root", str(root / "data"),
         "--exec-root", f"/run/lwc-tls-{root.name}", "--pidfile", str(root / "dockerd.pid"),
         "--bridge", bridge, "--iptables=false", "--ip-masq=false"],
        stdout=open(root / "dockerd.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": str(client)}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = subprocess.run(["docker", "version"], capture_output=True,
                               env={**env, "PATH": "/usr/bin:/bin:/usr/local/bin"})
        if ready.returncode == 0:
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        pytest.fail("the TLS engine did not come up: " + (root / "dockerd.log").read_text()[-2000:])
    yield client
    proc.terminate()
    proc.wait(timeout=30)
    subprocess.run(["ip", "link", "del", bridge], check=False)
    shutil.rmtree(f"/run/lwc-tls-{root.name}", ignore_errors=True)


def test_dind_tls_connection_waits_for_late_certificates(job, tls_engine, tmp_path):
    certdir = tmp_path / "certs"
    certdir.mkdir()

    def dind_writes_certificates_late() -> None:
        time.sleep(1.5)
        shutil.copytree(tls_engine, certdir / "client")

    writer = threading.Thread(target=dind_writes_certificates_late)
    writer.start()
    result = job.run("login", DOCKER_HOST=None, CI="true", DOCKER_TLS_CERTDIR=str(certdir),
                     LWC_LOCAL_SOCKET=str(tmp_path / "no-local-engine.sock"),
                     LWC_DIND_HOST="127.0.0.1", LWC_DOCKER_TIMEOUT="30")
    writer.join()
    assert result.returncode == 0, result.stderr[-3000:]
    address = result.events("engine_address")[0]
    assert address["address"] == "tcp://127.0.0.1:2376" and "TLS" in address["reason"]
    assert result.events("engine_ready")


def test_docker_host_on_2376_gets_the_tls_variables(job, tls_engine, tmp_path):
    certdir = tmp_path / "certs"
    shutil.copytree(tls_engine, certdir / "client")
    result = job.run("login", DOCKER_HOST="tcp://127.0.0.1:2376", DOCKER_TLS_CERTDIR=str(certdir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2376" in result.events("engine_address")[0]["reason"]


def test_missing_dind_certificates_exit_3_naming_them(job, tmp_path):
    result = job.run("login", DOCKER_HOST=None, CI="true", DOCKER_TLS_CERTDIR=str(tmp_path),
                     LWC_LOCAL_SOCKET=str(tmp_path / "no-local-engine.sock"),
                     LWC_DIND_HOST="127.0.0.1", LWC_DOCKER_TIMEOUT="1")
    assert result.returncode == 3
    error = result.events("failed")[-1]["error"]
    assert "ca.pem" in error and "DOCKER_TLS_CERTDIR" in error
