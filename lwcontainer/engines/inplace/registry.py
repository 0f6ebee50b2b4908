"""The OCI distribution API through oras-py: one client per registry, authenticated once for
every repository this run touches there.

oras-py does the authentication: it parses the ``Basic`` or ``Bearer`` challenge, builds the
basic header, and asks the token service for a token (with credentials, or anonymously). The
requests themselves go through oras' session but not its request helpers, each for a reason
said where it matters: oras' ``get_manifest`` reads the user's docker config (this run never
does), ``upload_manifest`` sends every manifest as OCI (this one keeps the base's Docker media
type), it has no cross-repository mount, its uploads read files (a blob copied between
registries is streamed, never written to disk), and its retry decorator sleeps 3**n seconds
(this run retries whole steps with LWC_PUSH_RETRIES and a capped backoff).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

import oras.auth
import oras.auth.utils
import oras.provider
import requests


DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[2:]
TIMEOUT_S = 60
CHUNK = 1 << 20


class RegistryError(Exception):
    """A registry's refusal or absence; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def auth(self) -> bool:
        return self.status in (401, 403)

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


class RegistryClient:
    """One registry host. ``scopes`` are the repositories and actions this run needs there
    (``repository:NAME:pull,push``): a bearer token is asked for all of them at once, so a
    cross-repository mount is allowed wherever the credentials allow it."""

    def __init__(self, host: str, credentials: Credentials | None, insecure: bool,
                 scopes: Iterable[str], bytes_counter: list[int] | None = None) -> None:
        self.host = host
        self.api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        self.credentials = credentials
        self.scheme = "http" if insecure else "https"
        self.scopes = sorted(set(scopes))
        self.oras = oras.provider.Registry(hostname=self.api_host, insecure=insecure,
                                           auth_backend="token")
        self.headers: dict[str, str] = {}
        self.sent = bytes_counter if bytes_counter is not None else [0]
        self.authenticated = False

    # -- authentication (oras' backends) ----------------------------------------------------
    def authenticate(self) -> None:
        if self.authenticated:
            return
        answer = self._send("GET", "/v2/", auth=False)
        challenge = answer.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if answer.status_code == 200 or not challenge:
            pass
        elif scheme == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.host} asks for a login and this run has none for it "
                                    "(only CI_REGISTRY gets CI_REGISTRY_USER's password)", 401)
            backend = oras.auth.get_auth_backend("basic", self.oras.session, insecure=False)
            backend.set_basic_auth(self.credentials.user, self.credentials.password)
            self.headers = backend.get_auth_header()
        elif scheme == "bearer":
            self.headers = {"Authorization": f"Bearer {self._token(challenge)}"}
        else:
            raise RegistryError(f"{self.host} asks for an unknown authentication: {scheme}",
                                answer.status_code)
        self.authenticated = True

    def _token(self, challenge: str) -> str:
        header = oras.auth.utils.parse_auth_header(challenge)
        header.scope = self.scopes or header.scope  # a list: requests repeats ?scope=
        backend = self.oras.auth
        if self.credentials is not None:
            backend.set_basic_auth(self.credentials.user, self.credentials.password)
            token = backend.request_token(header)
        else:
            token = backend.request_anonymous_token(header)
        if not token:
            raise RegistryError(f"{self.host} gave no token for {', '.join(self.scopes)}"
                                + ("" if self.credentials else " (anonymous)"), 401)
        return token

    # -- requests ---------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}{path}" if path.startswith("/") else path

    def _send(self, method: str, path: str, auth: bool = True, **kwargs) -> requests.Response:
        headers = {**(self.headers if auth else {}), **kwargs.pop("headers", {})}
        try:
            return self.oras.session.request(method, self._url(path), headers=headers,
                                             timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(f"{self.host} could not be reached: {type(exc).__name__}: "
                                f"{_short(str(exc))}") from None

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,),
                **kwargs) -> requests.Response:
        self.authenticate()
        answer = self._send(method, path, **kwargs)
        replayable = isinstance(kwargs.get("data"), (bytes, type(None)))
        if answer.status_code == 401 and self.headers.get("Authorization", "").startswith(
                "Bearer") and replayable:
            self.authenticated = False  # the token expired (a long copy): one new token
            self.authenticate()
            answer = self._send(method, path, **kwargs)
        if answer.status_code not in ok:
            where = path.split("?", 1)[0]  # not the upload session's state
            raise RegistryError(f"{method} {where} on {self.host}: {answer.status_code} "
                                f"{_errors(answer)}", answer.status_code)
        return answer

    # -- manifests --------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[dict, str, bytes]:
        """(manifest, its digest, its bytes). Raw GET: oras' get_manifest reads the user's
        docker config for credentials, which this run never does."""
        answer = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                              headers={"Accept": ", ".join(MANIFEST_TYPES)})
        body = answer.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return json.loads(body), digest, body

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Raw PUT: oras' upload_manifest sends every manifest as OCI, and this one keeps the
        base's own media type. Returns the digest the registry reports."""
        answer = self.request("PUT", f"/v2/{repository}/manifests/{tag}", ok=(200, 201),
                              data=body, headers={"Content-Type": media_type})
        self.sent[0] += len(body)
        return answer.headers.get("Docker-Content-Digest") or \
            "sha256:" + hashlib.sha256(body).hexdigest()

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        answer = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        return answer.status_code == 200

    def blob(self, repository: str, digest: str) -> bytes:
        return self.request("GET", f"/v2/{repository}/blobs/{digest}").content

    def blob_json(self, repository: str, digest: str) -> dict:
        return json.loads(self.blob(repository, digest))

    def blob_stream(self, repository: str, digest: str) -> Iterator[bytes]:
        answer = self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True)
        return answer.iter_content(CHUNK)

    def mount(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount (raw POST: oras has no call for it). True when mounted; a
        registry that answers 202 wants the blob uploaded instead (GitLab does when the token
        cannot pull the source): the upload it opened is cancelled."""
        answer = self.request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}"
                                      f"&from={source}", ok=(201, 202))
        if answer.status_code == 201:
            return True
        location = answer.headers.get("Location")
        if location:
            self._send("DELETE", self._location(location))
        return False

    def upload(self, repository: str, digest: str, data: bytes | BinaryIO | Iterator[bytes],
               size: int) -> None:
        """``data``: bytes, an open file (streamed), or chunks of another registry's blob."""
        if not isinstance(data, bytes) and not hasattr(data, "read"):
            data = _Sized(data, size)  # a length, so the body is not sent chunked
        """Monolithic upload: POST, then PUT with the digest. Raw for a stream from another
        registry (oras' put_upload reads a file)."""
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,),
                               headers={"Content-Length": "0"})
        location = self._location(started.headers.get("Location", ""))
        separator = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{separator}digest={digest}", ok=(201,), data=data,
                     headers={"Content-Type": "application/octet-stream",
                              **({"Content-Length": str(size)} if size >= 0 else {})})
        self.sent[0] += max(size, 0)

    def _location(self, location: str) -> str:
        if not location:
            raise RegistryError(f"{self.host} opened an upload without a Location")
        return location if location.startswith("http") else self._url(location)


class _Sized:
    """A stream of chunks with a known length: requests then sends Content-Length instead of
    chunked encoding, which registries refuse for a monolithic upload."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self.chunks = chunks
        self.size = size
        self.buffer = b""

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        while amount < 0 or len(self.buffer) < amount:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if amount < 0:
            amount = len(self.buffer)
        out, self.buffer = self.buffer[:amount], self.buffer[amount:]
        return out


def _errors(answer: requests.Response) -> str:
    try:
        errors = answer.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
    except ValueError:
        text = answer.text
    return _short(text or answer.reason or "")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
