"""A small registry on loopback that records everything it receives and misbehaves on request:
the distribution API as far as a publish uses it (challenge, manifests, blobs, uploads,
cross-repository mounts), with knobs for what a hostile or broken registry does.

Every request is recorded (method, path, host it was meant for, headers, body length), so a
test asserts on what reached the registry, not on what the client meant to send. Started as a
proxy (``HTTP_PROXY`` pointing at it), it records requests meant for other hosts: how a test
sees what would have gone to a host that is not on loopback.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Received:
    method: str
    path: str
    host: str  # the host the request was meant for (the proxy's target, or this registry)
    headers: dict[str, str]
    body: int

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class Storage:
    blobs: dict[str, bytes] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)  # (repository, digest) it holds
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)


class FakeRegistry:
    """``auth``: None, ``("basic", user, password)`` or ``("bearer", realm)``."""

    def __init__(self, auth: tuple | None = None, storage: Storage | None = None) -> None:
        self.auth = auth
        self.storage = storage or Storage()
        self.received: list[Received] = []
        self.tokens: set[str] = set()  # bearer tokens this registry accepts
        # misbehaviour
        self.upload_location: Callable[[str, str], str] | None = None  # (repo, id) -> Location
        self.serve: dict[str, bytes] = {}  # path -> body served instead of the stored one
        self.drip: dict[str, float] = {}  # path prefix -> seconds per byte of the body
        self.drip_headers: set[str] = set()  # path prefixes whose headers come byte by byte
        self.content_digest: str | None = None  # Docker-Content-Digest on a manifest PUT
        self.error_text: dict[str, str] = {}  # path prefix -> a 400 with this message
        self.redirect: dict[str, str] = {}  # path -> a 307 to this URL
        self.open_root = False  # /v2/ answers 200 to anyone; the repositories still want auth
        self.before: list[Callable[[Received], None]] = []  # called on each request, before
        # its authorization is checked (a test expires the tokens there)
        self.server: ThreadingHTTPServer | None = None
        self.address = ""

    # -- content ----------------------------------------------------------------------------
    def add_blob(self, data: bytes, repository: str = "") -> str:
        digest = sha256(data)
        self.storage.blobs[digest] = data
        self.storage.links.add((repository, digest))
        return digest

    def add_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        digest = sha256(body)
        self.storage.manifests[(repository, reference)] = (body, media_type)
        self.storage.manifests[(repository, digest)] = (body, media_type)
        return digest

    def add_image(self, repository: str, tag: str, layers: list[bytes],
                  config: dict | None = None) -> tuple[str, bytes, bytes]:
        """(manifest digest, manifest bytes, config bytes) of a Docker schema 2 image."""
        config = config or {"architecture": "amd64", "os": "linux",
                            "config": {"Cmd": ["/bin/sh"], "WorkingDir": "/"},
                            "rootfs": {"type": "layers",
                                       "diff_ids": [sha256(b"tar" + layer) for layer in layers]},
                            "history": [{"created_by": "base"}]}
        config_bytes = json.dumps(config).encode()
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes),
                               "digest": self.add_blob(config_bytes, repository)},
                    "layers": [{"mediaType": DOCKER_LAYER, "size": len(layer),
                                "digest": self.add_blob(layer, repository)}
                               for layer in layers]}
        body = json.dumps(manifest).encode()
        return self.add_manifest(repository, tag, body, DOCKER_MANIFEST), body, config_bytes

    # -- what was received ------------------------------------------------------------------
    def requests(self, method: str | None = None, prefix: str = "") -> list[Received]:
        return [r for r in self.received if (method is None or r.method == method)
                and r.path.startswith(prefix)]

    @property
    def writes(self) -> list[Received]:
        """Every request that would change the registry: an upload or a manifest."""
        return [r for r in self.received if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    # -- server -----------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1") -> str:
        registry = self

        class Handler(_Handler):
            pass

        Handler.registry = registry
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.address = f"{host}:{self.server.server_address[1]}"
        return self.address

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> FakeRegistry:
        if not self.address:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    registry: FakeRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    # every method goes through one dispatcher
    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def dispatch(self) -> None:
        registry = self.registry
        target = urlsplit(self.path)
        host = target.netloc or self.headers.get("Host", "")
        path = target.path + (f"?{target.query}" if target.query else "")
        body = self.read_body()
        registry.received.append(Received(self.command, path, host,
                                          {k.lower(): v for k, v in self.headers.items()},
                                          len(body)))
        self.path_only, self.query = target.path, parse_qs(target.query)
        for hook in registry.before:
            hook(registry.received[-1])
        for prefix, message in registry.error_text.items():
            if path.startswith(prefix):
                return self.answer(400, json.dumps({"errors": [
                    {"code": "DENIED", "message": message}]}).encode())
        if not (registry.open_root and target.path == "/v2/") and not self.authorized():
            return
        if target.path in registry.redirect:
            return self.answer(307, b"", {"Location": registry.redirect[target.path]})
        try:
            self.route(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authorized(self) -> bool:
        registry, auth = self.registry, self.registry.auth
        if auth is None:
            return True
        given = self.headers.get("Authorization", "")
        if auth[0] == "basic":
            expected = "Basic " + base64.b64encode(f"{auth[1]}:{auth[2]}".encode()).decode()
            if given == expected:
                return True
            challenge = 'Basic realm="fake"'
        else:
            if given.startswith("Bearer ") and given[7:] in registry.tokens:
                return True
            challenge = f'Bearer realm="{auth[1]}",service="fake-registry"'
        self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}',
                    {"Www-Authenticate": challenge})
        return False

    def route(self, body: bytes) -> None:
        registry, storage, path = self.registry, self.registry.storage, self.path_only
        if path == "/v2/":
            return self.answer(200, b"{}")
        name, kind, rest = _split(path)
        if kind == "manifests":
            if self.command == "PUT":
                media_type = self.headers.get("Content-Type", "")
                digest = registry.add_manifest(name, rest, body, media_type)
                return self.answer(201, b"", {"Docker-Content-Digest":
                                              registry.content_digest or digest})
            found = storage.manifests.get((name, rest))
            if found is None:
                return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            data = registry.serve.get(path, found[0])
            return self.answer(200, data, {"Content-Type": found[1],
                                           "Docker-Content-Digest": sha256(found[0])})
        if kind == "blobs":
            linked = (name, rest) in storage.links or ("", rest) in storage.links
            data = registry.serve.get(path, storage.blobs.get(rest) if linked else None)
            if data is None:
                return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            return self.answer(200, data, {"Docker-Content-Digest": rest})
        if kind == "uploads":
            return self.upload(name, rest, body)
        return self.answer(404, b"")

    def upload(self, name: str, upload_id: str, body: bytes) -> None:
        registry, storage = self.registry, self.registry.storage
        if self.command == "POST":
            mount = self.query.get("mount", [""])[0]
            source = self.query.get("from", [""])[0]
            if mount and (source, mount) in storage.links:
                storage.links.add((name, mount))
                return self.answer(201, b"", {"Docker-Content-Digest": mount})
            new = secrets.token_hex(8)
            location = (registry.upload_location(name, new) if registry.upload_location
                        else f"/v2/{name}/blobs/uploads/{new}?_state=s{new}")
            return self.answer(202, b"", {"Location": location, "Range": "0-0"})
        if self.command == "PUT":
            digest = self.query.get("digest", [""])[0]
            if sha256(body) != digest:
                return self.answer(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
            storage.blobs[digest] = body
            storage.links.add((name, digest))
            return self.answer(201, b"", {"Docker-Content-Digest": digest})
        if self.command == "DELETE":
            return self.answer(204, b"")
        return self.answer(405, b"")

    def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        drip_body = next((s for p, s in self.registry.drip.items() if self.path.startswith(p)
                          or self.path_only.startswith(p)), None)
        slow_headers = any(self.path_only.startswith(p) for p in self.registry.drip_headers)
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        slow = slow_headers or (drip_body is not None and self.command != "HEAD")
        for key, value in {"Content-Length": str(len(body)),
                           "Content-Type": "application/json", **(headers or {}),
                           **({"Connection": "close"} if slow else {})}.items():
            lines.append(f"{key}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if slow_headers:
            return self.trickle(head, 0.5)
        self.wfile.write(head)
        if self.command == "HEAD":
            return
        if drip_body is not None:
            return self.trickle(body, drip_body)
        self.wfile.write(body)

    def trickle(self, data: bytes, seconds_per_byte: float) -> None:
        """One byte at a time, until the client gives up (or the data ends)."""
        for index in range(len(data)):
            try:
                self.wfile.write(data[index:index + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(seconds_per_byte)
        self.close_connection = True


def _split(path: str) -> tuple[str, str, str]:
    """/v2/<name>/<manifests|blobs>/<ref> and /v2/<name>/blobs/uploads/<id>."""
    inner = path[len("/v2/"):]
    if "/blobs/uploads/" in inner or inner.endswith("/blobs/uploads"):
        name, _, rest = inner.partition("/blobs/uploads")
        return name, "uploads", rest.strip("/")
    for kind in ("manifests", "blobs"):
        marker = f"/{kind}/"
        if marker in inner:
            name, _, rest = inner.rpartition(marker)
            return name, kind, rest
    return inner, "", ""


class Silent:
    """A server that accepts connections, reads what it is sent and never answers (a token
    realm that hangs). ``connections`` counts who came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.connections = 0
        self.open: list[socket.socket] = []
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()
