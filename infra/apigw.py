"""API Gateway (REST API, v1 Lambda proxy integration) emulation on a local threaded HTTP server.

Routes come from the template's ``Type: Api`` events. A request becomes the proxy event API
Gateway builds, the function runs in-process, and its ``statusCode``/``headers``/
``multiValueHeaders``/``body`` become the HTTP answer. Unknown path: 404; known path, other
method (TRACE and methods HTTP does not define included): 405; body over 10 MB: 413; a
``Content-Length`` that is not a size: 400; handler exception or malformed answer: 502 (tracebacks
go to the log only). Every answer of the emulation itself is JSON ``{"message"}``, the server's
own (a malformed request line, headers too long) included. OPTIONS on a known path answers the
API's CORS preflight (its ``Cors`` in the template); other answers carry CORS headers only if the
function sets them, as on AWS. ``GET /`` lists routes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.template import ACCOUNT_ID, ApiRoute

log = logging.getLogger("infra.apigw")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
#: connections the kernel queues before the server accepts them (socketserver's default, 5, makes a burst of
#: clients wait 1-3 s for their SYN to be retried)
LISTEN_BACKLOG = 128

#: invoke(function_logical_id, event, request_id) -> the handler's return value (exceptions propagate)
Invoke = Callable[[str, dict[str, Any], str], Any]


class PayloadTooLarge(Exception):
    pass


class BadContentLength(ValueError):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG


@dataclass(frozen=True)
class _CompiledRoute:
    route: ApiRoute
    regex: re.Pattern[str]
    names: tuple[str, ...]


def _compile(route: ApiRoute) -> _CompiledRoute:
    """``/a/{id}/b`` and greedy ``/{proxy+}`` path templates to a regex."""
    names: list[str] = []
    parts: list[str] = []
    for segment in route.path.strip("/").split("/") if route.path.strip("/") else []:
        match = re.fullmatch(r"\{([^}+]+)(\+?)\}", segment)
        if match:
            names.append(match.group(1))
            parts.append(f"(?P<p{len(names) - 1}>.+)" if match.group(2) else f"(?P<p{len(names) - 1}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return _CompiledRoute(route, re.compile("^/" + "/".join(parts) + "/?$"), tuple(names))


class ApiGateway:
    """The local REST API: ``start()`` binds 127.0.0.1:port (0 = a free port), ``stop()`` frees it."""

    def __init__(self, routes: Sequence[ApiRoute], invoke: Invoke, *, host: str = "127.0.0.1", port: int = 8000,
                 stage: str = "local", api_id: str = "local", account_id: str = ACCOUNT_ID,
                 max_body_bytes: int = MAX_BODY_BYTES, cors: Mapping[str, str] | None = None) -> None:
        self.routes = [_compile(route) for route in routes]
        #: the API's CORS preflight answer (template: the Api's Cors); None answers OPTIONS like any method
        self.cors = dict(cors) if cors is not None else None
        self.invoke = invoke
        self.host = host
        self.requested_port = port
        self.stage = stage
        self.api_id = api_id
        self.account_id = account_id
        self.max_body_bytes = max_body_bytes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the API server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        gateway = self

        class Handler(_RequestHandler):
            api = gateway

        server = _Server((self.host, self.requested_port), Handler)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="apigw", daemon=True)
        self._thread.start()
        log.info("API Gateway emulation on %s (%d routes)", self.url, len(self.routes))

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.port = 0

    # ------------------------------------------------------------------ routing
    def match(self, path: str) -> list[tuple[ApiRoute, dict[str, str]]]:
        """Every route whose path template matches ``path``, with its path parameters."""
        found: list[tuple[ApiRoute, dict[str, str]]] = []
        for compiled in self.routes:
            hit = compiled.regex.match(path)
            if hit:
                params = {name: unquote(hit.group(f"p{i}")) for i, name in enumerate(compiled.names)}
                found.append((compiled.route, params))
        return found

    def index(self) -> dict[str, Any]:
        return {"service": "callsight-local", "stage": self.stage, "routes": [
            {"method": c.route.method, "path": c.route.path, "function": c.route.function} for c in self.routes]}

    def build_event(self, *, route: ApiRoute, method: str, raw_path: str, query: str,
                    headers: list[tuple[str, str]], body: bytes, path_parameters: dict[str, str],
                    source_ip: str, request_id: str) -> dict[str, Any]:
        """The REST API (v1) Lambda proxy integration event, shaped like API Gateway's."""
        single_headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in headers:
            single_headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        single_query: dict[str, str] = {}
        multi_query: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            single_query[name] = value
            multi_query.setdefault(name, []).append(value)
        if body:
            try:
                body_text: str | None = body.decode("utf-8")
                is_base64 = False
            except UnicodeDecodeError:
                body_text, is_base64 = base64.b64encode(body).decode("ascii"), True
        else:
            body_text, is_base64 = None, False
        now = datetime.now(tz=UTC)
        lowered = {k.lower(): v for k, v in single_headers.items()}
        return {
            "resource": route.path,
            "path": raw_path,
            "httpMethod": method,
            "headers": single_headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": single_query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, route.path).hex[:6],
                "resourcePath": route.path,
                "httpMethod": method,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{raw_path}",
                "accountId": self.account_id,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": lowered.get("host", "localhost").split(".")[0],
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {
                    "cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None, "caller": None,
                    "sourceIp": source_ip, "principalOrgId": None, "accessKey": None,
                    "cognitoAuthenticationType": None, "cognitoAuthenticationProvider": None, "userArn": None,
                    "userAgent": lowered.get("user-agent"), "user": None,
                },
                "domainName": lowered.get("host", "localhost"),
                "apiId": self.api_id,
            },
            "body": body_text,
            "isBase64Encoded": is_base64,
        }


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


class _RequestHandler(BaseHTTPRequestHandler):
    api: ApiGateway
    protocol_version = "HTTP/1.1"
    server_version = "callsight-local-apigw"
    wbufsize = 1 << 16  # status line, headers and body leave in one write (flushed per request)

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # an answer never waits for the client's delayed ACK (40 ms)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        """Any other method (TRACE, PROPFIND, made-up ones) is routed like the others: 404 or 405, in JSON."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP server's own errors (a malformed request line, headers too long) as JSON, not HTML."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        if self.request_version == "HTTP/0.9":  # a request line it could not read: answer with a status line
            self.request_version = "HTTP/1.1"
        self._send(code, _json_body({"message": message or phrase}), close=True)

    # ------------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
              *, close: bool = False) -> None:
        self.send_response(status)
        sent = {name.lower() for name, _ in headers or []}
        for name, value in headers or []:
            self.send_header(name, value)
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-RequestId", getattr(self, "_request_id", ""))
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadContentLength(self.headers.get("Content-Length")) from None
        if length < 0:  # rfile.read(-1) would wait for the client to close the connection
            raise BadContentLength(length)
        if length > self.api.max_body_bytes:
            self._discard(length)
            raise PayloadTooLarge(length)
        return self.rfile.read(length) if length else b""

    def _discard(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        too_large = False
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunk = self.rfile.read(size)
            self.rfile.readline()
            if len(data) + len(chunk) > self.api.max_body_bytes:
                too_large = True
                data.clear()
            elif not too_large:
                data.extend(chunk)
        if too_large:
            raise PayloadTooLarge(-1)
        return bytes(data)

    def _handle(self) -> None:
        self._request_id = str(uuid.uuid4())
        started = time.perf_counter()
        split = urlsplit(self.path)
        path = split.path or "/"
        method = self.command.upper()
        try:
            body = self._read_body()
        except PayloadTooLarge:
            self._send(413, _json_body({"message": f"HTTP content length exceeded {self.api.max_body_bytes} bytes."}),
                       close=True)
            return
        except BadContentLength:
            self._send(400, _json_body({"message": "Content-Length must be a number of bytes"}), close=True)
            return
        except ValueError:
            self._send(400, _json_body({"message": "Bad request body"}), close=True)
            return
        matches = self.api.match(path)
        if not matches:
            if path == "/" and method in ("GET", "HEAD"):
                self._send(200, _json_body(self.api.index()))
            else:
                self._send(404, _json_body({"message": "Not Found"}))
            return
        allowed = sorted({route.method for route, _ in matches})
        chosen = next(((r, p) for r, p in matches if r.method in (method, "ANY")), None)
        if chosen is None and method == "HEAD":
            chosen = next(((r, p) for r, p in matches if r.method == "GET"), None)
        if chosen is None:
            if method == "OPTIONS" and self.api.cors is not None:
                self._send(204, b"", list(self.api.cors.items()))
            else:
                self._send(405, _json_body({"message": "Method Not Allowed"}),
                           [("Allow", ", ".join([*allowed, "OPTIONS"]))])
            return
        route, params = chosen
        event = self.api.build_event(
            route=route, method=method, raw_path=path, query=split.query, headers=list(self.headers.items()),
            body=body, path_parameters=params, source_ip=self.client_address[0], request_id=self._request_id)
        try:
            result = self.api.invoke(route.function, event, self._request_id)
            status, headers, payload = _proxy_response(result)
        except Exception as exc:
            log.error("%s %s -> %s raised:\n%s", method, path, route.function,
                      "".join(traceback.format_exception(exc)).rstrip())
            self._send(502, _json_body({"message": "Internal server error"}))
            return
        self._send(status, payload, headers)
        log.info("%s %s -> %s %d (%.0f ms)", method, self.path, route.function, status,
                 (time.perf_counter() - started) * 1000)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class MalformedProxyResponse(ValueError):
    pass


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy answer to (status, headers, body); malformed answers raise (-> 502)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        raise MalformedProxyResponse(f"Malformed Lambda proxy response: {str(result)[:200]}")
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        raise MalformedProxyResponse(f"bad statusCode {result['statusCode']!r}") from None
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedProxyResponse("headers and multiValueHeaders must be objects")
    for name, values in multi.items():
        headers.extend((str(name), str(v)) for v in (values if isinstance(values, list) else [values]))
    multi_names = {name.lower() for name in multi}
    headers.extend((str(name), str(value)) for name, value in single.items() if name.lower() not in multi_names)
    body = result.get("body")
    if body is None:
        payload = b""
    elif result.get("isBase64Encoded"):
        payload = base64.b64decode(str(body))
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    else:  # API Gateway accepts only a string body
        raise MalformedProxyResponse(f"body must be a string, got {type(body).__name__}")
    return status, headers, payload
