"""infra.apigw: routing, the REST API (v1) proxy event, proxy answers and API Gateway's own answers (the template's
GatewayResponses). The authorizer, API keys and throttling: test_gateway_auth.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infra.apigw import MAX_BODY_BYTES, ApiGateway
from infra.template import ApiRoute, Template

EVENT_KEYS = {"resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
              "multiValueQueryStringParameters", "pathParameters", "stageVariables", "requestContext", "body",
              "isBase64Encoded"}


class Recorder:
    """Stands in for the Lambda dispatcher: records events, answers what the test asks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.answer: Any = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}

    def __call__(self, function: str, event: dict[str, Any], request_id: str) -> Any:
        self.calls.append((function, event, request_id))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


ROUTES = [
    ApiRoute("Create", "C", "/api/things", "POST"),
    ApiRoute("List", "L", "/api/things", "GET"),
    ApiRoute("One", "O", "/api/things/{id}", "GET"),
    ApiRoute("Files", "F", "/files/{path+}", "ANY"),
]


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET,POST,OPTIONS",
        "Access-Control-Allow-Headers": "content-type"}
#: the real template's gateway responses and the origin they name (the local platform's frontend origin)
TEMPLATE = Template()
RESPONSES = TEMPLATE.gateway_responses
ORIGIN = TEMPLATE.parameters["AllowedOrigin"]


def assert_gateway_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """API Gateway's own answer: our error JSON (each error naming a field and a problem) with the CORS header."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = answer.json()
    assert set(body) == {"error", "message", "errors"} and body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["errors"] and all(set(e) == {"field", "problem"} for e in body["errors"]), body
    return dict(body)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def api(recorder: Recorder) -> Iterator[ApiGateway]:
    gateway = ApiGateway(ROUTES, recorder, port=0, stage="test", cors=CORS, gateway_responses=RESPONSES)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def http(api: ApiGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        yield client


def test_post_builds_the_proxy_event(http: httpx.Client, recorder: Recorder) -> None:
    answer = http.post("/api/things?a=1&b=2&a=3", content=b'{"x": 1}',
                       headers={"Content-Type": "application/json", "X-Multi": "one"})
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    (function, event, request_id), = recorder.calls
    assert function == "Create"
    assert set(event) == EVENT_KEYS
    assert event["resource"] == "/api/things" and event["path"] == "/api/things"
    assert event["httpMethod"] == "POST"
    assert event["queryStringParameters"] == {"a": "3", "b": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "3"], "b": ["2"]}
    assert event["pathParameters"] is None and event["stageVariables"] is None
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["headers"]["X-Multi"] == "one" and event["multiValueHeaders"]["X-Multi"] == ["one"]
    assert event["body"] == '{"x": 1}' and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["requestId"] == request_id == answer.headers["x-amzn-RequestId"]
    assert context["stage"] == "test" and context["httpMethod"] == "POST"
    assert context["path"] == "/test/api/things" and context["resourcePath"] == "/api/things"
    assert context["identity"]["sourceIp"] == "127.0.0.1"


def test_get_without_query_or_body_has_nulls(http: httpx.Client, recorder: Recorder) -> None:
    assert http.get("/api/things").status_code == 200
    event = recorder.calls[0][1]
    assert recorder.calls[0][0] == "List"
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_path_parameters_and_greedy_paths(http: httpx.Client, recorder: Recorder) -> None:
    http.get("/api/things/a%20b")
    http.delete("/files/x/y/z.txt")
    (f1, e1, _), (f2, e2, _) = recorder.calls
    assert (f1, e1["pathParameters"], e1["resource"]) == ("One", {"id": "a b"}, "/api/things/{id}")
    assert (f2, e2["pathParameters"], e2["httpMethod"]) == ("Files", {"path": "x/y/z.txt"}, "DELETE")


def test_binary_body_is_base64(http: httpx.Client, recorder: Recorder) -> None:
    http.post("/api/things", content=b"\xff\xfe\x00")
    event = recorder.calls[0][1]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe\x00"


def test_proxy_answer_headers_multivalue_and_base64(http: httpx.Client, recorder: Recorder) -> None:
    recorder.answer = {"statusCode": 201, "headers": {"X-One": "1", "Content-Type": "application/octet-stream",
                                                      "Access-Control-Allow-Origin": "*"},
                       "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
                       "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True}
    answer = http.post("/api/things")
    assert answer.status_code == 201
    assert answer.content == b"\x00\x01"
    assert answer.headers["X-One"] == "1"
    assert answer.headers.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_path_is_the_templates_404(http: httpx.Client, recorder: Recorder) -> None:
    """MISSING_AUTHENTICATION_TOKEN is API Gateway's answer for a route it does not have (the template: 404)."""
    assert_gateway_error(http.get("/api/nothing"), 404, "not_found")
    assert not recorder.calls


def test_a_method_the_path_does_not_define_is_the_same_404_as_on_aws(http: httpx.Client, recorder: Recorder) -> None:
    """API Gateway has no 405: a known path with another method is MISSING_AUTHENTICATION_TOKEN too."""
    answer = http.put("/api/things")
    assert_gateway_error(answer, 404, "not_found")
    assert "Allow" not in answer.headers
    assert not recorder.calls


def test_without_gateway_responses_api_gateways_bare_defaults_answer(recorder: Recorder) -> None:
    gateway = ApiGateway(ROUTES, recorder, port=0)
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            answer = http.get("/api/nothing")
            assert (answer.status_code, answer.json()) == (403, {"message": "Missing Authentication Token"})
            assert "Access-Control-Allow-Origin" not in answer.headers
            recorder.answer = KeyError("boom")
            failed = http.get("/api/things")
            assert (failed.status_code, failed.json()) == (502, {"message": "Internal server error"})
    finally:
        gateway.stop()


def test_cors_preflight(http: httpx.Client, recorder: Recorder) -> None:
    answer = http.options("/api/things", headers={"Origin": "http://localhost:3000",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type"})
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Allow-Headers"] == "content-type"
    assert not recorder.calls
    assert http.options("/api/nothing").status_code == 404


def test_body_over_10_mb_is_413(http: httpx.Client, recorder: Recorder) -> None:
    answer = http.post("/api/things", content=b"x" * (MAX_BODY_BYTES + 1))
    assert assert_gateway_error(answer, 413, "body_too_large")["errors"][0]["field"] == "body"
    assert not recorder.calls
    assert http.post("/api/things", content=b"x" * 1024).status_code == 200  # the server still answers


def test_handler_exception_is_502_and_logged(http: httpx.Client, recorder: Recorder,
                                             caplog: pytest.LogCaptureFixture) -> None:
    recorder.answer = KeyError("secret detail")
    with caplog.at_level(logging.ERROR, logger="infra.apigw"):
        answer = http.post("/api/things")
    assert_gateway_error(answer, 502, "bad_gateway")
    assert "secret detail" not in answer.text
    assert "Traceback" in caplog.text and "secret detail" in caplog.text


@pytest.mark.parametrize("bad", [None, {"body": "x"}, {"statusCode": 200, "body": {"not": "a string"}}])
def test_malformed_proxy_answer_is_502(http: httpx.Client, recorder: Recorder, bad: Any) -> None:
    recorder.answer = bad
    assert_gateway_error(http.get("/api/things"), 502, "bad_gateway")


def test_index_lists_the_routes(http: httpx.Client) -> None:
    index = http.get("/").json()
    assert {(r["method"], r["path"], r["function"]) for r in index["routes"]} == {
        (r.method, r.path, r.function) for r in ROUTES}


def test_stop_frees_the_port(recorder: Recorder) -> None:
    gateway = ApiGateway(ROUTES, recorder, port=0)
    gateway.start()
    port = gateway.port
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    gateway.stop()
    gateway.stop()  # idempotent
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")


def test_every_route_of_the_real_template_is_served(recorder: Recorder) -> None:
    """Routing alone (each route's authorizer and API key: test_gateway_auth.py and tests/api/test_access.py)."""
    template = Template()
    routes = [dataclasses.replace(route, authorizer=None, api_key_required=False) for route in template.api_routes]
    gateway = ApiGateway(routes, recorder, port=0, stage=template.api_stage)
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url) as http:
            for route in template.api_routes:
                method = "GET" if route.method == "ANY" else route.method
                path = route.path.replace("{", "").replace("}", "").replace("+", "")
                assert http.request(method, path, content=json.dumps({}) if method != "GET" else None
                                    ).status_code == 200
                assert recorder.calls[-1][0] == route.function
                assert recorder.calls[-1][1]["requestContext"]["stage"] == template.api_stage
    finally:
        gateway.stop()


def _raw(api: ApiGateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes httpx would not send; the answer's status, headers and body (the server closes or says how long)."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, body
            body += chunk
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "FOO"])
def test_any_other_method_is_routed_like_the_rest_in_json(http: httpx.Client, recorder: Recorder,
                                                          method: str) -> None:
    assert_gateway_error(http.request(method, "/api/things"), 404, "not_found")
    assert_gateway_error(http.request(method, "/api/nothing"), 404, "not_found")
    assert not recorder.calls


@pytest.mark.parametrize("length", [b"-1", b"-100", b"ten", b"1e3"])
def test_a_content_length_that_is_no_size_is_400_at_once(api: ApiGateway, recorder: Recorder, length: bytes) -> None:
    """``rfile.read(-1)`` would wait for the client to close: the socket's 5 s timeout would fail this test."""
    status, headers, body = _raw(api, b"POST /api/things HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
                                 + b"\r\n\r\n{}")
    assert status == 400 and headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == ORIGIN
    answer = json.loads(body)
    assert answer["error"] == "invalid_request" and "Content-Length" in answer["message"]
    assert answer["errors"] == [{"field": "body", "problem": answer["message"]}]
    assert not recorder.calls


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
])
def test_the_servers_own_errors_are_json(api: ApiGateway, request_bytes: bytes, status: int) -> None:
    answer_status, headers, body = _raw(api, request_bytes)
    assert answer_status == status and headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == ORIGIN
    answer = json.loads(body)
    assert answer["error"] == ("gateway_error" if status >= 500 else "bad_request") and answer["message"]


def test_a_burst_of_connections_is_queued_not_dropped(recorder: Recorder) -> None:
    """With the accept loop stopped, the kernel completes as many handshakes as the listen backlog allows
    (socketserver's default: 5, so a burst's extra SYNs are dropped and retried after 1-3 s)."""
    gateway = ApiGateway(ROUTES, recorder, port=0)
    gateway.start()
    clients = [socket.socket() for _ in range(50)]
    try:
        assert gateway._server is not None
        gateway._server.shutdown()  # the socket listens, nothing accepts
        for client in clients:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", gateway.port))
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 5  # handshakes beyond the backlog would never complete: nothing accepts
        while len(connected) < len(clients) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [c for c in clients if c not in connected], [], 0.1)
            connected.update(c for c in writable if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert len(connected) == len(clients)
    finally:
        for client in clients:
            client.close()
        gateway.stop()
