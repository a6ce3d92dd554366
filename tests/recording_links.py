"""Test support for recording links: a small real HTTP(S) server with fixed answers, a resolver that maps names
the tests choose, and a transport that lets no request leave the machine (and records each one)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socketserver
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callsight.links import IPAddress


class _QuickServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # HTTPServer's resolves the host name (getfqdn), which can take seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "audio/wav"
    headers: dict[str, str] = field(default_factory=dict)


class LinkServer:
    """A local HTTP server (HTTPS with ``tls``) answering ``routes`` by path; ``requests`` lists (path, Host)."""

    def __init__(self, routes: dict[str, Route] | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, str]] = []
        self._tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    @property
    def port(self) -> int:
        assert self._port, "not started"
        return self._port

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host_port}"

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("Host", "")))
                route = owner.routes.get(self.path.split("?", 1)[0], Route(404, b"no such recording", "text/plain"))
                self.send_response(route.status)
                if route.content_type is not None:
                    self.send_header("Content-Type", route.content_type)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in route.headers and "Transfer-Encoding" not in route.headers:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _QuickServer(("127.0.0.1", 0), Handler)
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server, self._port = server, int(server.server_address[1])
        threading.Thread(target=server.serve_forever, args=(0.05,), name="link-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeDns:
    """A resolver answering what the test says for each name (a list, or a function of the call count)."""

    def __init__(self, answers: dict[str, Sequence[str] | Callable[[int], Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        answer = self.answers.get(host)
        if answer is None:
            raise OSError(f"no test address for {host}")
        addresses = answer(len(self.calls)) if callable(answer) else answer
        return [ipaddress.ip_address(a) for a in addresses]


@dataclass(frozen=True)
class Sent:
    address: str  #: where the connection went
    port: int
    host_header: str
    sni: str | None


class LocalOnly(httpx.BaseTransport):
    """Sends loopback requests through a real transport; refuses any other destination without connecting, as
    an unreachable network would. ``sent`` records every request that reached the transport."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.sent: list[Sent] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sni = request.extensions.get("sni_hostname")
        self.sent.append(Sent(request.url.host, request.url.port or 0, request.headers.get("host", ""),
                              None if sni is None else str(sni)))
        if not ipaddress.ip_address(request.url.host).is_loopback:
            raise httpx.ConnectError("the test network reaches loopback only", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it signed for ``names``: contexts for both ends."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def server_context(self, folder: Path) -> ssl.SSLContext:
        (folder / "cert.pem").write_bytes(self.cert_pem)
        (folder / "key.pem").write_bytes(self.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def make_certificates(*names: str) -> Certificates:
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callsight test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return Certificates(
        ca.public_bytes(pem), cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
