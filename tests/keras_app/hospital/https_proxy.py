"""An HTTPS front for a test Orthanc that demands basic or bearer auth, as nginx would.

Orthanc 1.10.1 as Debian builds it crashed on its first HTTPS request in our tests
("SslEnabled": true), and it has no bearer tokens without a plugin: hospitals put a
TLS-terminating proxy in front of it, and so do these tests. Requests without the
right `Authorization` get 401; the others are forwarded to Orthanc over loopback.
"""

from __future__ import annotations

import base64
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class HttpsProxy:
    """`start()` serves https://127.0.0.1:PORT in a thread; `stop()` ends it.

    Args:
        upstream: the plain HTTP root to forward to.
        cert, key: the proxy's certificate and key (PEM).
        user, password: the basic-auth credentials accepted.
        token: the bearer token accepted.
    """

    def __init__(
        self, upstream: str, cert: Path, key: Path, *, user: str, password: str, token: str
    ):
        self.upstream = upstream.rstrip("/")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.accepted = {f"Basic {basic}", f"Bearer {token}"}
        self.refused = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HttpsProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                if self.headers.get("Authorization") not in proxy.accepted:
                    proxy.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="pacs"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self._body()
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in HOP_BY_HOP | {"authorization"}
                }
                answer = requests.request(
                    self.command, proxy.upstream + self.path, headers=headers, data=body, timeout=60
                )
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []  # dicomweb-client sends a large STOW body in chunks
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(parts)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args):  # quiet: the test reads the node's lines
                pass

        return Handler
