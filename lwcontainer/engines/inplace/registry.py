"""The OCI distribution API through oras-py: one client per registry, authenticated once for
every repository this run touches there.

oras-py does the authentication: it parses the ``Basic`` or ``Bearer`` challenge, builds the
basic header, and asks the token service for a token (with credentials, or anonymously). The
challenge is /v2/'s, or, for a registry whose /v2/ is open, its repositories' first 401. A 401
of the registry's own origin is answered once: when no credentials were sent yet, or when the
token sent had been accepted before (it expired: GitLab's tokens last minutes, a copy may take
longer). The request is then sent again, or, when its body was a stream already spent,
``Renewed`` tells the caller to run the whole step again. A 401 right after new credentials is a
refusal; a 401 of another origin (an upload location, a redirect) is never answered, as it never
gets credentials.

The requests themselves go through oras' session but not its request helpers, each for a reason
said where it matters: oras' ``get_manifest`` reads the user's docker config (this run never
does), ``upload_manifest`` sends every manifest as OCI (this one keeps the base's Docker media
type), it has no cross-repository mount, its uploads read files (a blob copied between
registries is streamed, never written to disk), and its retry decorator sleeps 3**n seconds
(this run retries whole steps with LWC_PUSH_RETRIES and a capped backoff).

What a registry says is not trusted (transport.py adds the deadlines and the origin rules):
- every digest is checked (a known algorithm, its exact number of hex digits) before it is put
  into a path or a log line; every manifest, index and blob read is checked against the digest
  (and size) it was asked for, and a mismatch is ``Untrusted``, never retried;
- credentials go only to the registry's own origin, and to a token realm only over HTTPS or on
  loopback (GitLab's realm is another host than its registry);
- the digest reported for a pushed manifest is the one computed here: the registry's
  ``Docker-Content-Digest`` is only compared with it;
- a registry's error text reaches the log shortened and without control characters.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Generator, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import oras.auth
import oras.auth.utils
import oras.provider
import requests

from .transport import (DeadlineExceeded, Limit, Refused, Transport, finish, loopback, origin,
                        show)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[2:]
CHUNK = 1 << 20
MAX_SMALL_BYTES = 16 << 20  # a manifest or a config larger than this is refused
SMALL = Limit(60, "LWC_DOCKER_TIMEOUT")  # the settings' defaults
TRANSFER = Limit(1800, "LWC_TRANSFER_TIMEOUT")
#: digest algorithms the OCI image spec registers, and their hex lengths
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha384|sha512):([0-9a-f]+)")


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


class Renewed(RegistryError):
    """A 401 on a request whose body was a stream, already spent: the credentials expired during
    the step. The client has new ones; the caller runs the step again, its stream opened anew.
    Status 401: if it reaches a caller that cannot do that, it is a refusal."""


class Untrusted(RegistryError):
    """An answer that is not what was asked for (a digest that does not match, a value that is
    no digest) or a place the rules forbid sending to: never retried."""


def check_digest(value: object, what: str) -> str:
    """``value`` if it is a digest (a known algorithm and exactly its number of lower-case hex
    digits); otherwise Untrusted, without echoing more than a safe, short form of it."""
    found = _DIGEST_RE.fullmatch(value) if isinstance(value, str) else None
    if not found or len(found.group(2)) != DIGEST_LENGTHS[found.group(1)]:
        raise Untrusted(f"{what} is not a digest (sha256/sha384/sha512 and its hex digits): "
                        f"{_short(ascii(value), 80)}")
    return value


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verified(data: bytes, digest: str, size: int | None, what: str) -> bytes:
    """``data`` if it is the content ``digest`` (and ``size``) name; otherwise Untrusted."""
    found = digest_of(data, digest.split(":", 1)[0])
    if found != digest:
        raise Untrusted(f"{what}: asked for {digest}, the registry answered content whose "
                        f"digest is {found}")
    if size is not None and len(data) != size:
        raise Untrusted(f"{what} {digest}: its size is {len(data)} bytes, {size} were announced")
    return data


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


class RegistryClient:
    """One registry host. ``scopes`` are the repositories and actions this run needs there
    (``repository:NAME:pull,push``): a bearer token is asked for all of them at once, so a
    cross-repository mount is allowed wherever the credentials allow it."""

    def __init__(self, host: str, credentials: Credentials | None, insecure: bool,
                 scopes: Iterable[str], bytes_counter: list[int] | None = None,
                 small: Limit = SMALL, transfer: Limit = TRANSFER) -> None:
        self.host = host
        self.api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        self.credentials = credentials
        self.scheme = "http" if insecure else "https"
        self.origin = origin(f"{self.scheme}://{self.api_host}/")
        self.scopes = sorted(set(scopes))
        self.small, self.transfer = small, transfer
        self.oras = oras.provider.Registry(hostname=self.api_host, insecure=insecure,
                                           auth_backend="token")
        self.trusted = {self.origin}  # who may see Authorization (transport.py enforces it)
        adapter = Transport(small, self.trusted)
        self.oras.session.mount("http://", adapter)
        self.oras.session.mount("https://", adapter)
        self.headers: dict[str, str] = {}
        self.sent = bytes_counter if bytes_counter is not None else [0]
        self.authenticated = False
        self.accepted = False  # a request was answered (not 401) with the current credentials

    # -- authentication (oras' backends) ----------------------------------------------------
    def authenticate(self) -> None:
        """Once: /v2/ says whether (and how) the registry wants credentials. A registry whose
        /v2/ is open may still want them for its repositories: ``request`` answers the challenge
        of such a 401."""
        if self.authenticated:
            return
        answer = self._send("GET", "/v2/", auth=False)
        challenge = answer.headers.get("Www-Authenticate", "")
        if answer.status_code != 200 and challenge:
            self._answer(challenge, answer.status_code)
        self.authenticated = True

    def _answer(self, challenge: str, status: int) -> None:
        """The credentials a ``Basic`` or ``Bearer`` challenge of the registry's own origin asks
        for; they are new until a request made with them is answered otherwise than 401."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
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
                                status)
        self.accepted = False

    def _renewable(self, answer: requests.Response) -> bool:
        """A 401 worth one answer: from the registry's own origin, with a challenge, when this
        run sent no credentials yet (a registry open at /v2/ but not in its repositories) or a
        token the registry has accepted before (it expired: a long copy outlives a GitLab token).
        A 401 on new credentials, on a login (Basic does not expire) or from another origin (an
        upload location: it never gets credentials) is a refusal."""
        if answer.status_code != 401 or origin(answer.url or "") != self.origin \
                or not answer.headers.get("Www-Authenticate"):
            return False
        sent = self.headers.get("Authorization", "")
        return not sent or (sent.startswith("Bearer ") and self.accepted)

    def _token(self, challenge: str) -> str:
        header = oras.auth.utils.parse_auth_header(challenge)
        header.scope = self.scopes or header.scope  # a list: requests repeats ?scope=
        realm = header.realm or ""
        if not realm.startswith(("https://", "http://")):
            realm = header.realm = f"{self.scheme}://{realm}"
        where = origin(realm)
        if self.credentials is not None and where != self.origin and where[0] != "https" \
                and not loopback(where[1]):
            raise RegistryError(f"{self.host}'s token service {show(where)} is another host "
                                "over plain HTTP: CI_REGISTRY_USER's password goes to another "
                                "host only over HTTPS (or on loopback)", 401)
        backend = self.oras.auth
        try:
            if self.credentials is not None:
                self.trusted.add(where)  # the Basic header, to this realm only
                backend.set_basic_auth(self.credentials.user, self.credentials.password)
                token = backend.request_token(header)
            else:
                token = backend.request_anonymous_token(header)
        except requests.RequestException as exc:
            raise RegistryError(f"{self.host}'s token service {show(where)} failed: "
                                f"{_reason(exc)}") from None
        except ValueError:
            raise RegistryError(f"{self.host}'s token service {show(where)} answered "
                                "something that is not JSON") from None
        if not isinstance(token, str) or not token.isprintable():
            token = None
        if not token:
            raise RegistryError(f"{self.host} gave no token for {', '.join(self.scopes)}"
                                + ("" if self.credentials else " (anonymous)"), 401)
        return token

    # -- requests ---------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}{path}" if path.startswith("/") else path

    def _send(self, method: str, path: str, auth: bool = True, limit: Limit | None = None,
              **kwargs) -> requests.Response:
        url = self._url(path)
        own = origin(url) == self.origin  # credentials only to the registry's own origin
        headers = {**(self.headers if auth and own else {}), **kwargs.pop("headers", {})}
        try:
            return self.oras.session.request(method, url, headers=headers,
                                             timeout=limit or self.small, **kwargs)
        except Refused as exc:
            raise Untrusted(f"{self.host} sent this run to {exc}") from None
        except requests.RequestException as exc:
            raise RegistryError(f"{self.host} could not be reached: {_reason(exc)}") from None

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,),
                **kwargs) -> requests.Response:
        """One request, its 401 answered once (``_renewable``): sent again with the new
        credentials, or, when its body was a stream that is now spent, ``Renewed``."""
        self.authenticate()
        answer = self._send(method, path, **kwargs)
        where = f"{method} {path.split('?', 1)[0]} on {self.host}"  # not the upload's state
        if self._renewable(answer):
            spent = not isinstance(kwargs.get("data"), (bytes, type(None)))  # a stream, sent
            said = _short(f"{where}: 401 {_errors(answer)}", 600) if spent else ""
            _close(answer)
            self._answer(answer.headers["Www-Authenticate"], 401)
            if spent:
                raise Renewed(f"{said} (its token was refused while the body, a stream, was "
                              "sent)", 401)
            answer = self._send(method, path, **kwargs)
        if answer.status_code != 401 and origin(answer.url or "") == self.origin:
            self.accepted = True
        if answer.status_code not in ok:
            message = _short(f"{where}: {answer.status_code} {_errors(answer)}", 600)
            _close(answer)
            raise RegistryError(message, answer.status_code)
        return answer

    # -- manifests --------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str, size: int | None = None
                 ) -> tuple[dict, str, bytes]:
        """(manifest, its digest, its bytes); a digest ``reference`` (and ``size``) is what
        the bytes must be. Raw GET: oras' get_manifest reads the user's docker config for
        credentials, which this run never does."""
        pinned = ":" in reference
        if pinned:
            check_digest(reference, f"the manifest of {repository}")
        body = self._small(f"/v2/{repository}/manifests/{reference}",
                           f"the manifest {reference} of {repository}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if pinned:
            verified(body, reference, size, f"the manifest of {repository}")
        digest = reference if pinned else digest_of(body)
        try:
            manifest = json.loads(body)
        except ValueError:
            raise Untrusted(f"the manifest of {repository}:{reference} is not JSON") from None
        if not isinstance(manifest, dict):
            raise Untrusted(f"the manifest of {repository}:{reference} is not a JSON object")
        return manifest, digest, body

    def put_manifest(self, repository: str, tag: str, body: bytes,
                     media_type: str) -> tuple[str, bool]:
        """Raw PUT: oras' upload_manifest sends every manifest as OCI, and this one keeps the
        base's own media type. Returns the manifest's digest, computed here, and whether the
        registry's Docker-Content-Digest (if it sent one) is the same."""
        answer = self.request("PUT", f"/v2/{repository}/manifests/{tag}", ok=(200, 201),
                              data=body, headers={"Content-Type": media_type})
        self.sent[0] += len(body)
        digest = digest_of(body)
        said = answer.headers.get("Docker-Content-Digest")
        return digest, said is None or said == digest

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        check_digest(digest, f"a blob of {repository}")
        answer = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        return answer.status_code == 200

    def blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config), checked against its digest and size."""
        check_digest(digest, f"a blob of {repository}")
        body = self._small(f"/v2/{repository}/blobs/{digest}", f"the blob {digest}")
        return verified(body, digest, size, f"the blob of {repository}")

    def blob_json(self, repository: str, digest: str, size: int | None = None) -> dict:
        try:
            value = json.loads(self.blob(repository, digest, size))
        except ValueError:
            raise Untrusted(f"the blob {digest} of {repository} is not JSON") from None
        if not isinstance(value, dict):
            raise Untrusted(f"the blob {digest} of {repository} is not a JSON object")
        return value

    def blob_stream(self, repository: str, digest: str) -> Generator[bytes, None, None]:
        """A large blob, streamed within LWC_TRANSFER_TIMEOUT (the target registry checks its
        digest when the upload ends)."""
        check_digest(digest, f"a blob of {repository}")
        answer = self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True,
                              limit=self.transfer)
        return self._chunks(answer, f"{digest} from {self.host}")

    def _chunks(self, answer: requests.Response, what: str,
                limit: Limit | None = None) -> Iterator[bytes]:
        """A streamed body, within its deadline; the deadline passing is said as such."""
        limit = limit or self.transfer
        late = False
        try:
            yield from answer.iter_content(CHUNK)
        except requests.RequestException as exc:
            late = finish(answer)
            reason = f"no complete answer within {limit.seconds:g}s ({limit.setting})" \
                if late else _reason(exc)
            raise RegistryError(f"reading {what} failed: {reason}") from None
        finally:
            late = finish(answer) or late
            answer.close()
        if late:
            raise RegistryError(f"reading {what} failed: no complete answer within "
                                f"{limit.seconds:g}s ({limit.setting})")

    def _small(self, path: str, what: str, **kwargs) -> bytes:
        """A manifest or a config: read whole, within LWC_DOCKER_TIMEOUT, at most
        MAX_SMALL_BYTES (a registry cannot make this run hold gigabytes in memory)."""
        answer = self.request("GET", path, stream=True, **kwargs)
        body = bytearray()
        chunks = self._chunks(answer, what, self.small)
        try:
            for chunk in chunks:
                body += chunk
                if len(body) > MAX_SMALL_BYTES:
                    raise Untrusted(f"{what} is larger than {MAX_SMALL_BYTES} bytes")
        finally:
            chunks.close()
        return bytes(body)

    def mount(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount (raw POST: oras has no call for it). True when mounted; a
        registry that answers 202 wants the blob uploaded instead (GitLab does when the token
        cannot pull the source): the upload it opened is cancelled."""
        check_digest(digest, f"a blob of {source}")
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
        """Monolithic upload: POST, then PUT with the digest. Raw for a stream from another
        registry (oras' put_upload reads a file). ``data``: bytes, an open file (streamed), or
        chunks of another registry's blob; all but bytes have LWC_TRANSFER_TIMEOUT."""
        check_digest(digest, f"a blob for {repository}")
        limit = self.small if isinstance(data, bytes) else self.transfer
        if not isinstance(data, bytes) and not hasattr(data, "read"):
            data = _Sized(data, size)  # a length, so the body is not sent chunked
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,),
                               headers={"Content-Length": "0"})
        location = self._location(started.headers.get("Location", ""))
        separator = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{separator}digest={digest}", ok=(201,), data=data,
                     limit=limit, headers={"Content-Type": "application/octet-stream",
                              **({"Content-Length": str(size)} if size >= 0 else {})})
        self.sent[0] += max(size, 0)

    def _location(self, location: str) -> str:
        """The upload's URL: relative to the registry, or absolute (another origin then gets
        no credentials, and plain HTTP only on loopback: transport.py)."""
        url = urljoin(f"{self.scheme}://{self.api_host}/", location)
        if not location or urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError(f"{self.host} opened an upload without a usable Location")
        return url


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


def _close(answer: requests.Response) -> None:
    """A streamed answer that is not read: its deadline ends, its connection is dropped."""
    if finish(answer) or getattr(answer, "lwc_watch", None) is not None:
        answer.close()


def _reason(exc: Exception) -> str:
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    return f"{type(exc).__name__}: {_short(str(exc))}"


def _errors(answer: requests.Response) -> str:
    """The registry's error text: its first 64 kB (a streamed answer is read no further, and
    within its deadline), shortened and printable."""
    try:
        raw = answer.content if getattr(answer, "lwc_watch", None) is None else \
            next(answer.iter_content(1 << 16), b"")
    except requests.RequestException:
        raw = b""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors
                         if isinstance(e, dict))
    else:
        text = raw.decode("utf-8", "replace")
    return _short(str(text or answer.reason or ""))


def _short(text: str, limit: int = 300) -> str:
    """One printable line: a registry's text never puts control characters into a log."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[:limit] + "…"
