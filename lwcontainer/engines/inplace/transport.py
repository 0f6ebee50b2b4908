"""HTTP for the registry client: a requests adapter, mounted on oras' session, so that oras' own
requests (the token service's) obey the same two rules as lwcontainer's:

- **A total deadline per request.** requests' ``timeout`` bounds each socket operation, so a
  server that sends one byte a second, or a token realm that never answers (oras asks it with no
  timeout at all), holds a run for as long as it likes. Here every request has a deadline for
  all of it (connect, send, headers and the whole body): when it passes, a watchdog shuts the
  connection's socket down, which ends any blocked send or receive, and the request fails with
  ``DeadlineExceeded`` naming the setting, as a network error would. A request says its limit
  through requests' ``timeout`` argument (a ``Limit``); one that says nothing (oras' token
  requests) gets the adapter's default.
- **Credentials only where they were issued.** ``Authorization`` goes only to the origins
  (scheme, host and port) the client trusts with it: the registry's own, and the token realm it
  accepted. Any other origin (an upload ``Location``, a redirect) gets the request without it,
  and only over HTTPS unless it is on loopback.

A body a caller streams (``stream=True``) keeps its deadline until the caller calls
``finish(response)``.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ...config.reference import is_loopback

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Limit:
    """How long one request may take in all, and the setting that says so."""

    seconds: float
    setting: str


class DeadlineExceeded(requests.Timeout):
    def __init__(self, limit: Limit) -> None:
        super().__init__(f"no complete answer within {limit.seconds:g}s ({limit.setting})")
        self.limit = limit


class Refused(requests.RequestException):
    """A request the rules forbid: it was not sent."""


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def loopback(hostname: str) -> bool:
    """A URL's host name (no port, no brackets) on the loopback range."""
    return is_loopback(f"[{hostname}]" if ":" in hostname else hostname)


def show(where: tuple[str, str, int]) -> str:
    scheme, host, port = where
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if DEFAULT_PORTS.get(scheme) == port else f":{port}")


# -- the watchdog -------------------------------------------------------------------------------
_current = threading.local()


class _Watch:
    """One request's deadline: the sockets it used, shut down when the time is up. Sockets,
    not connections: http.client hands a socket over to the response (and forgets it) when the
    server says it will close the connection."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.fired = self.done = False
        self.timer = threading.Timer(limit.seconds, self.fire)
        self.timer.daemon = True
        self.timer.start()

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            if sock not in self.sockets:
                self.sockets.append(sock)
            fired = self.fired and not self.done
        if fired:
            _shut(sock)

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shut(sock)

    def finish(self) -> None:
        with self.lock:
            self.done = True
        self.timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # ends a blocked send or receive in the other thread
    except OSError:
        pass


def _watched(sock: socket.socket | None) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.add(sock)


class _Watching:
    """Hands every socket a connection uses to the current request's watch."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # the TCP socket, before any TLS handshake
        _watched(sock)
        return sock

    def request(self, *args, **kwargs):
        _watched(self.sock)  # a connection kept alive from an earlier request
        return super().request(*args, **kwargs)


class _WatchedHTTP(_Watching, HTTPConnection):
    pass


class _WatchedHTTPS(_Watching, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


# -- the adapter --------------------------------------------------------------------------------
class Transport(HTTPAdapter):
    """``trusted``: the origins that may receive ``Authorization``; ``default``: the limit of a
    request that gives none."""

    def __init__(self, default: Limit, trusted: set[tuple[str, str, int]]) -> None:
        self.default = default
        self.trusted = trusted
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = POOLS
        return manager

    def allowed(self, request: requests.PreparedRequest) -> None:
        """Strips credentials for an origin not trusted with them; refuses plain HTTP to
        another origin off loopback."""
        where = origin(request.url or "")
        if where in self.trusted:
            return
        request.headers.pop("Authorization", None)
        if where[0] != "https" and not loopback(where[1]):
            raise Refused(f"{show(where)} is another origin than the registry's, over plain "
                          "HTTP and not on loopback: lwcontainer sends nothing there (a "
                          "registry may send clients elsewhere only over HTTPS)")

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        limit = timeout if isinstance(timeout, Limit) else self.default
        self.allowed(request)
        watch = _Watch(limit)
        previous = getattr(_current, "watch", None)
        _current.watch = watch
        handed_over = False  # a streamed body keeps its deadline until finish()
        try:
            response = super().send(request, stream=True, timeout=(limit.seconds, limit.seconds),
                                    verify=verify, cert=cert, proxies=proxies)
            if stream:
                response.lwc_watch = watch
                handed_over = True
                return response
            _ = response.content  # the whole body, within the deadline
            if watch.fired:
                raise DeadlineExceeded(limit)
            return response
        except requests.RequestException as exc:
            if watch.fired and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(limit) from None
            raise
        finally:
            _current.watch = previous
            if not handed_over:
                watch.finish()


def finish(response: requests.Response) -> bool:
    """Ends a streamed response's deadline; True if it had passed (the body is not whole)."""
    watch = getattr(response, "lwc_watch", None)
    if watch is None:
        return False
    watch.finish()
    return watch.fired
