"""A token service for the test registry (the distribution "token" auth GitLab's registry uses):
JWTs signed with a throw-away RSA key through the openssl CLI, the certificate in the x5c
header, every request's scopes recorded. Basic credentials get what they ask for; anonymous
requests get pull on ``public/*`` only."""
from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

SERVICE = "lwc-token-registry"
ISSUER = "lwc-token-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self, directory: Path, user: str, password: str) -> None:
        self.directory = directory
        self.user, self.password = user, password
        self.key, self.cert = directory / "token-key.pem", directory / "token-cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=lwc-token-issuer", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []
        self.issued: set[str] = set()  # every token given out (a fake registry accepts these)
        self.server: ThreadingHTTPServer | None = None

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{b64url(json.dumps(header).encode())}." \
                        f"{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return f"{signing_input}.{b64url(signature)}"

    def grant(self, scopes: list[str], authenticated: bool) -> list[dict]:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":", 2)
            wanted = actions.split(",")
            if not authenticated:
                wanted = ["pull"] if name.startswith("public/") and "pull" in wanted else []
            if wanted:
                access.append({"type": kind, "name": name, "actions": wanted})
        return access

    def start(self, port: int = 0) -> str:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = parse_qs(urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                authenticated = False
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if (user, password) != (service.user, service.password):
                        self.send_response(401)
                        self.end_headers()
                        return
                    authenticated = True
                scopes = query.get("scope", [])
                service.requests.append({"scopes": scopes, "authenticated": authenticated,
                                         "authorization": auth})
                now = int(time.time())
                token = service.sign({"iss": ISSUER, "sub": service.user if authenticated else "",
                                      "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                                      "iat": now, "jti": secrets.token_hex(8),
                                      "access": service.grant(scopes, authenticated)})
                service.issued.add(token)
                body = json.dumps({"token": token, "access_token": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
