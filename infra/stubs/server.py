"""The HTTP scaffolding the stub servers share.

A stub subclasses :class:`StubServer` and answers requests in ``_serve_request``; this module serves them
over real HTTP/1.1 (a threaded server that tracks its kept-alive connections so ``stop()`` cuts them),
runs the server in a daemon thread (``start``/``stop``, a context manager, ``port``/``url``) and runs a
stub from the command line until SIGINT or SIGTERM (:func:`serve_until_signal`).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import socketserver
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, ClassVar, Self, TypeVar


@dataclass
class Response:
    """One HTTP answer. ``Content-Type`` and ``Content-Length`` are sent unless the status is 204."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class StubHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that serves ``stub``, keeps track of its connections and stays quiet."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops bursts of connections (the client retries a second later)

    def __init__(self, address: tuple[str, int], handler: type[StubRequestHandler], stub: StubServer) -> None:
        self.stub = stub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can take seconds: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Closes kept-alive client connections so nothing is served after ``stop()``."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet: a client hanging up mid-answer is not worth a traceback


class StubRequestHandler(BaseHTTPRequestHandler):
    """Reads a request, hands it to the server's stub and writes the stub's :class:`Response`.

    Subclasses set ``server_version`` (the ``Server`` header) and may read bodies their own way
    (``read_body``, ``read_length``).
    """

    protocol_version = "HTTP/1.1"
    server_version = "stub"
    sys_version = ""
    timeout = 30
    wbufsize = 1 << 16  # buffered: status line, headers and body leave in one write (flushed per request)

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # headers and body go out without waiting for delayed ACKs
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._stub_server().track(self.connection, add=True)

    def finish(self) -> None:
        self._stub_server().track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def _stub_server(self) -> StubHTTPServer:
        server = self.server
        assert isinstance(server, StubHTTPServer)
        return server

    @property
    def stub(self) -> StubServer:
        return self._stub_server().stub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _serve_command(self) -> None:
        self._serve(self.command)  # the request's method: "GET", "POST", ...

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve_command

    def _serve(self, method: str) -> None:
        read = self.read_body(method)
        if read is None:
            return
        body, size = read
        headers = {key.lower(): value for key, value in self.headers.items()}
        stub = self.stub
        try:
            response = stub._serve_request(method, self.path, headers, body, size)
        except Exception as error:  # never crash on input: answer 500 like a real server would
            response = stub._crash_response(error)
        self._send(response, method)

    def read_body(self, method: str) -> tuple[bytes | None, int] | None:
        """The request's body (``None``: too large to keep) and its size in bytes; ``None`` when the request
        was refused (already answered, and the connection closes)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        refusal = self.stub._refuse_length(length)
        if refusal is not None:
            self.refuse(refusal, method)
            return None
        return self.read_length(length), length

    def read_length(self, length: int) -> bytes | None:
        """Reads a body of ``length`` bytes (a ``Content-Length`` the stub accepted)."""
        return self.rfile.read(length) if length else b""

    def refuse(self, response: Response, method: str) -> None:
        """Answers without reading the body, and closes the connection."""
        self.close_connection = True
        self._send(response, method)

    def _send(self, response: Response, method: str) -> None:
        self.send_response(response.status)
        if response.status != 204:
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD" and response.status != 204 and response.body:
            self.wfile.write(response.body)


class StubServer(ABC):
    """A stub served over HTTP. ``start()`` serves in a daemon thread; use as a context manager in tests.

    Subclasses answer in ``_serve_request``, say which ``Content-Length`` to refuse (``_refuse_length``)
    and what a crash while answering looks like (``_crash_response``).
    """

    #: the request handler (sets the ``Server`` header, may read bodies its own way)
    handler_class: ClassVar[type[StubRequestHandler]] = StubRequestHandler
    #: the serving thread's name, followed by ``-<port>``
    thread_name: ClassVar[str] = "stub"

    def __init__(self, *, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: StubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- requests

    @abstractmethod
    def _serve_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, size: int
    ) -> Response:
        """Answers one request (handler threads call this); ``body`` is what ``read_body`` kept."""

    @abstractmethod
    def _refuse_length(self, length: int) -> Response | None:
        """The answer to a request whose ``Content-Length`` is ``length`` (-1: not a number) when it is
        refused unread; ``None`` to read it."""

    @abstractmethod
    def _crash_response(self, error: Exception) -> Response:
        """The answer when ``_serve_request`` raised ``error``."""

    # ------------------------------------------------------------------------------- lifecycle

    def _before_start(self) -> None:  # noqa: B027 - an optional hook
        """Called by ``start()`` just before the server is created."""

    def _before_stop(self) -> None:  # noqa: B027 - an optional hook
        """Called by ``stop()`` just before a running server shuts down."""

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._before_start()
        server = StubHTTPServer((self._host, self._port), self.handler_class, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.thread_name}-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._before_stop()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stub is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server's root, ``http://host:port``."""
        return f"http://{self._host}:{self.port}"


_Stub = TypeVar("_Stub", bound=StubServer)


def serve_until_signal(stub: _Stub, banner: Callable[[_Stub], str]) -> int:
    """Serves ``stub`` until SIGINT or SIGTERM (the ``python -m`` entry points): starts it, prints
    ``banner(stub)`` (naming ``stub.url``) and stops it. Returns the exit status, 0."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stub.start()
    print(banner(stub), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stub.stop()
    return 0
