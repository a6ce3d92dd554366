"""API Gateway (REST API, v1 Lambda proxy integration) emulation on a local threaded HTTP server.

Routes come from the template's ``Type: Api`` events. A request becomes the proxy event API Gateway builds, the
function runs in its container (the dispatcher's ``invoke``), and its ``statusCode``/``headers``/
``multiValueHeaders``/``body`` become the HTTP answer. A route with an authorizer (the Api's ``Auth``) runs it
first, as API Gateway does: a missing identity header is ``UNAUTHORIZED`` without calling it; otherwise the
authorizer function gets the REQUEST authorizer event, its answer is cached by the identity headers' values for
its ``ReauthorizeEvery`` seconds (a cached policy is evaluated against each request's method ARN), ``raise
Exception("Unauthorized")`` is ``UNAUTHORIZED``, a Deny or a policy not covering the method is ``ACCESS_DENIED``,
anything else (another error, a malformed answer, no answer in time) ``AUTHORIZER_CONFIGURATION_ERROR`` (AWS's 500
``AuthorizerConfigurationException``); an Allow puts its ``context`` and ``principalId`` into
``requestContext.authorizer``. A route needing an API key (``ApiKeyRequired``, ApiKeySourceType AUTHORIZER) then
needs the authorizer's ``usageIdentifierKey`` to be an enabled API key of the usage plan (``INVALID_API_KEY``),
throttled per key by the plan's rate and burst (a token bucket: ``THROTTLED``). The integration is cut after 29 s
(``INTEGRATION_TIMEOUT``; the function itself runs on in its container up to its own Timeout, as on AWS).

Every answer of the emulation itself is one of the template's ``GatewayResponses`` (status, headers, the JSON
template with ``$context`` variables substituted), with API Gateway's fallbacks (``DEFAULT_4XX``/``DEFAULT_5XX``,
then its own ``{"message"}``): an unknown route, or a known path with an undefined method (TRACE and made-up
methods included), is ``MISSING_AUTHENTICATION_TOKEN`` as on AWS; a body over 10 MB ``REQUEST_TOO_LARGE``; a
``Content-Length`` that is not a size ``BAD_REQUEST_BODY``; a handler that raises or answers malformed
``INTEGRATION_FAILURE`` (tracebacks go to the log only); the server's own errors (a malformed request line, headers
too long) ``DEFAULT_4XX``/``DEFAULT_5XX`` with their status. OPTIONS on a known path answers the API's CORS
preflight (its ``Cors``) without authorization. ``GET /`` lists routes (local only).
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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.iam import wildcard
from infra.lambdas import FunctionError
from infra.template import (
    ACCOUNT_ID,
    GATEWAY_RESPONSE_STATUS,
    REGION,
    ApiAuthorizer,
    ApiRoute,
    GatewayResponse,
    UsagePlanSpec,
    render_gateway_template,
)

log = logging.getLogger("infra.apigw")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
#: connections the kernel queues before the server accepts them (socketserver's default, 5, makes a burst of
#: clients wait 1-3 s for their SYN to be retried)
LISTEN_BACKLOG = 128

#: API Gateway's integration timeout for a REST API (its default and, without a quota increase, its maximum)
INTEGRATION_TIMEOUT_S = 29.0
#: what API Gateway answers when a Lambda proxy integration fails (raises, or answers malformed)
LAMBDA_PROXY_FAILURE_STATUS = 502
#: how long the usage plan's enabled API keys are remembered (a key not among them is looked up again at once)
PLAN_KEYS_TTL_S = 5.0
#: API Gateway's own text of each response type (``$context.error.message``) when the emulation has no better one
GATEWAY_MESSAGES: dict[str, str] = {
    "UNAUTHORIZED": "Unauthorized",
    "ACCESS_DENIED": "User is not authorized to access this resource",
    "INVALID_API_KEY": "Forbidden",
    "AUTHORIZER_FAILURE": "Internal server error",
    "AUTHORIZER_CONFIGURATION_ERROR": "Internal server error",
    "THROTTLED": "Too Many Requests",
    "QUOTA_EXCEEDED": "Limit Exceeded",
    "INTEGRATION_TIMEOUT": "Endpoint request timed out",
    "INTEGRATION_FAILURE": "Internal server error",
    "MISSING_AUTHENTICATION_TOKEN": "Missing Authentication Token",
    "REQUEST_TOO_LARGE": "Request Too Long",
    "BAD_REQUEST_BODY": "Invalid request body",
    "BAD_REQUEST_PARAMETERS": "Invalid request parameters",
}
EXPLICIT_DENY = "User is not authorized to access this resource with an explicit deny"

#: invoke(function_logical_id, event, request_id) -> the handler's return value (exceptions propagate; a
#: function's error is ``infra.lambdas.FunctionError``)
Invoke = Callable[[str, dict[str, Any], str], Any]
#: the values of the usage plan's enabled API keys (the embedded AWS's apigateway)
PlanKeys = Callable[[], Collection[str]]


class PayloadTooLarge(Exception):
    pass


class BadContentLength(ValueError):
    pass


class IntegrationTimeout(TimeoutError):
    """The function did not answer within the integration timeout."""


class GatewayAnswer(Exception):
    """API Gateway answers this response type itself (``message``: its ``$context.error.message``; ``status``: the
    status it answers unless the template sets one, when not the type's documented default)."""

    def __init__(self, response_type: str, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(response_type)
        self.response_type = response_type
        self.message = message
        self.status = status


class MalformedAuthorizerAnswer(ValueError):
    pass


@dataclass(frozen=True)
class _Statement:
    effect: str  # Allow | Deny
    actions: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class AuthorizerAnswer:
    """A Lambda authorizer's valid answer (what API Gateway caches)."""

    principal_id: str
    statements: tuple[_Statement, ...]
    context: dict[str, str]
    usage_identifier_key: str | None

    def decision(self, method_arn: str) -> str | None:
        """None when the policy allows ``execute-api:Invoke`` on the method ARN, else API Gateway's message."""
        matching = [s for s in self.statements
                    if any(wildcard(a, ignore_case=True).match("execute-api:Invoke") for a in s.actions)
                    and any(wildcard(r, ignore_case=False).match(method_arn) for r in s.resources)]
        if any(s.effect == "Deny" for s in matching):
            return EXPLICIT_DENY
        return None if matching else GATEWAY_MESSAGES["ACCESS_DENIED"]

    @classmethod
    def parse(cls, answer: Any) -> AuthorizerAnswer:
        """Check an answer as API Gateway does: a principalId, a policy document of Allow/Deny statements, a flat
        context (string, number or boolean values; passed on as strings) and an optional usageIdentifierKey."""
        if not isinstance(answer, dict):
            raise MalformedAuthorizerAnswer(f"not an object but {type(answer).__name__}")
        principal = answer.get("principalId")
        if not isinstance(principal, str) or not principal:
            raise MalformedAuthorizerAnswer("no principalId")
        document = answer.get("policyDocument")
        raw = document.get("Statement") if isinstance(document, dict) else None
        raw = [raw] if isinstance(raw, dict) else raw
        if not isinstance(raw, list) or not raw:
            raise MalformedAuthorizerAnswer("policyDocument has no Statement")
        statements = tuple(_statement(item) for item in raw)
        context = answer.get("context") or {}
        if not isinstance(context, dict):
            raise MalformedAuthorizerAnswer("context is not an object")
        flat: dict[str, str] = {}
        for name, value in context.items():
            if isinstance(value, bool):
                flat[str(name)] = "true" if value else "false"
            elif isinstance(value, (str, int, float)):
                flat[str(name)] = str(value)
            else:
                raise MalformedAuthorizerAnswer(f"context.{name} is not a string, number or boolean")
        usage_key = answer.get("usageIdentifierKey")
        if usage_key is not None and not isinstance(usage_key, str):
            raise MalformedAuthorizerAnswer("usageIdentifierKey is not a string")
        return cls(principal, statements, flat, usage_key)


def _statement(item: Any) -> _Statement:
    if not isinstance(item, dict) or item.get("Effect") not in ("Allow", "Deny"):
        raise MalformedAuthorizerAnswer("a Statement without Effect Allow or Deny")
    actions, resources = item.get("Action"), item.get("Resource")
    actions = [actions] if isinstance(actions, str) else actions
    resources = [resources] if isinstance(resources, str) else resources
    for name, values in (("Action", actions), ("Resource", resources)):
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise MalformedAuthorizerAnswer(f"a Statement's {name} is not a string or a list of strings")
    return _Statement(str(item["Effect"]), tuple(actions or ()), tuple(resources or ()))


class TokenBucket:
    """API Gateway's throttle: ``burst`` requests at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def call_with_timeout(invoke: Invoke, function: str, event: dict[str, Any], request_id: str,
                      timeout_s: float) -> Any:
    """``invoke(...)``'s answer, or ``IntegrationTimeout`` after ``timeout_s`` (the invocation runs on: it ends
    within its function's own Timeout)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = invoke(function, event, request_id)
        except BaseException as exc:  # handed to the waiting request
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"apigw-{function}", daemon=True).start()
    if not done.wait(timeout_s):
        raise IntegrationTimeout(f"{function} did not answer within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


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
                 stage: str = "local", api_id: str = "local", account_id: str = ACCOUNT_ID, region: str = REGION,
                 max_body_bytes: int = MAX_BODY_BYTES, cors: Mapping[str, str] | None = None,
                 authorizers: Mapping[str, ApiAuthorizer] | None = None,
                 gateway_responses: Mapping[str, GatewayResponse] | None = None,
                 usage_plan: UsagePlanSpec | None = None, usage_plan_keys: PlanKeys | None = None,
                 integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``authorizers``, ``gateway_responses``, ``usage_plan``: the template's (``Template.api_authorizers`` &
        co.); ``usage_plan_keys``: the plan's enabled API key values now (without it no key is valid);
        ``integration_timeout_s`` and ``clock`` (the authorizer cache's, the throttle's): test knobs."""
        self.routes = [_compile(route) for route in routes]
        missing = sorted({c.route.authorizer for c in self.routes if c.route.authorizer} - set(authorizers or {}))
        if missing:
            raise ValueError(f"routes name authorizers {missing} that are not given")
        #: the API's CORS preflight answer (template: the Api's Cors); None answers OPTIONS like any method
        self.cors = dict(cors) if cors is not None else None
        self.invoke = invoke
        self.host = host
        self.requested_port = port
        self.stage = stage
        self.api_id = api_id
        self.account_id = account_id
        self.region = region
        self.max_body_bytes = max_body_bytes
        self.authorizers = dict(authorizers or {})
        self.gateway_responses = dict(gateway_responses or {})
        self.usage_plan = usage_plan
        self.usage_plan_keys = usage_plan_keys
        self.integration_timeout_s = integration_timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        #: (authorizer, identity values) -> (the answer, when it expires)
        self._authorizer_cache: dict[tuple[str, tuple[str, ...]], tuple[AuthorizerAnswer, float]] = {}
        self._plan_keys: tuple[frozenset[str], float] | None = None
        self._buckets: dict[str, TokenBucket] = {}
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

    # ------------------------------------------------------------------ access control and the integration
    def method_arn(self, method: str, path: str) -> str:
        return f"arn:aws:execute-api:{self.region}:{self.account_id}:{self.api_id}/{self.stage}/{method}{path}"

    def authorize(self, route: ApiRoute, event: dict[str, Any], request_id: str) -> None:
        """Run the route's authorizer and API key checks for a proxy event; on success its
        ``requestContext.authorizer`` is set, else ``GatewayAnswer`` says how API Gateway answers."""
        usage_key: str | None = None
        if route.authorizer is not None:
            answer = self._authorizer_answer(self.authorizers[route.authorizer], event, request_id)
            refusal = answer.decision(self.method_arn(event["httpMethod"], event["path"]))
            if refusal is not None:
                raise GatewayAnswer("ACCESS_DENIED", refusal)
            event["requestContext"]["authorizer"] = {**answer.context, "principalId": answer.principal_id}
            usage_key = answer.usage_identifier_key
        if route.api_key_required:
            if not usage_key or not self._is_plan_key(usage_key):
                raise GatewayAnswer("INVALID_API_KEY")
            if not self._take_token(usage_key):
                raise GatewayAnswer("THROTTLED")

    def _authorizer_answer(self, authorizer: ApiAuthorizer, event: dict[str, Any],
                           request_id: str) -> AuthorizerAnswer:
        headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
        identity = tuple(str(headers.get(name) or "") for name in authorizer.identity_headers)
        if not all(identity):  # API Gateway answers 401 without calling the authorizer
            raise GatewayAnswer("UNAUTHORIZED")
        cache_key = (authorizer.name, identity)
        now = self.clock()
        with self._lock:
            cached = self._authorizer_cache.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        request = {"type": "REQUEST", "methodArn": self.method_arn(event["httpMethod"], event["path"]),
                   **{k: event[k] for k in ("resource", "path", "httpMethod", "headers", "multiValueHeaders",
                                            "queryStringParameters", "multiValueQueryStringParameters",
                                            "pathParameters", "stageVariables", "requestContext")}}
        try:
            raw = call_with_timeout(self.invoke, authorizer.function, request, request_id, self.integration_timeout_s)
            answer = AuthorizerAnswer.parse(raw)
        except FunctionError as exc:
            if exc.payload.get("errorMessage") == "Unauthorized":
                raise GatewayAnswer("UNAUTHORIZED") from None
            log.error("authorizer %s (%s) failed: %s", authorizer.name, authorizer.function, exc)
            raise GatewayAnswer("AUTHORIZER_CONFIGURATION_ERROR") from None
        except (MalformedAuthorizerAnswer, IntegrationTimeout) as exc:
            log.error("authorizer %s (%s): %s", authorizer.name, authorizer.function, exc)
            raise GatewayAnswer("AUTHORIZER_CONFIGURATION_ERROR") from None
        except Exception as exc:  # the function could not be invoked at all
            log.error("authorizer %s (%s) could not be invoked: %s", authorizer.name, authorizer.function,
                      "".join(traceback.format_exception(exc)).rstrip())
            raise GatewayAnswer("AUTHORIZER_CONFIGURATION_ERROR") from None
        if authorizer.ttl_s > 0:
            with self._lock:
                self._authorizer_cache[cache_key] = (answer, now + authorizer.ttl_s)
        return answer

    def _is_plan_key(self, value: str) -> bool:
        """``value`` is an enabled API key of the usage plan (remembered for PLAN_KEYS_TTL_S; one not among the
        remembered ones is looked up again, so a key created a moment ago works at once)."""
        if self.usage_plan_keys is None:
            return False
        now = self.clock()
        with self._lock:
            known = self._plan_keys
        if known is not None and known[1] > now and value in known[0]:
            return True
        keys = frozenset(self.usage_plan_keys())
        with self._lock:
            self._plan_keys = (keys, now + PLAN_KEYS_TTL_S)
        return value in keys

    def _take_token(self, usage_key: str) -> bool:
        plan = self.usage_plan
        if plan is None or plan.rate_limit is None:
            return True
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(usage_key)
            if bucket is None:
                burst = plan.burst_limit if plan.burst_limit is not None else max(1, int(plan.rate_limit))
                bucket = self._buckets[usage_key] = TokenBucket(plan.rate_limit, burst, now)
            return bucket.take(now)

    def integrate(self, route: ApiRoute, event: dict[str, Any], request_id: str) -> tuple[
            int, list[tuple[str, str]], bytes]:
        """The function's proxy answer as (status, headers, body); ``GatewayAnswer`` when it fails or is late."""
        try:
            result = call_with_timeout(self.invoke, route.function, event, request_id, self.integration_timeout_s)
            return _proxy_response(result)
        except IntegrationTimeout:
            log.error("%s %s -> %s: no answer within %g s (INTEGRATION_TIMEOUT)", event["httpMethod"],
                      event["path"], route.function, self.integration_timeout_s)
            raise GatewayAnswer("INTEGRATION_TIMEOUT") from None
        except Exception as exc:
            log.error("%s %s -> %s raised:\n%s", event["httpMethod"], event["path"], route.function,
                      "".join(traceback.format_exception(exc)).rstrip())
            # a Lambda proxy integration's failure (an error, a malformed answer): AWS answers 502 by default
            raise GatewayAnswer("INTEGRATION_FAILURE", status=LAMBDA_PROXY_FAILURE_STATUS) from None

    def gateway_response(self, response_type: str, *, request_id: str, method: str, path: str,
                         resource: str = "", message: str | None = None,
                         status: int | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        """API Gateway's own answer of ``response_type``: the template's response of that type, else its
        DEFAULT_4XX/DEFAULT_5XX, else API Gateway's bare ``{"message"}``. ``status``: the status unless the template
        sets one (for DEFAULT_4XX/5XX the status they stand in for), else the type's documented default."""
        own_status = status or GATEWAY_RESPONSE_STATUS[response_type] or 500
        spec = self.gateway_responses.get(response_type) or self.gateway_responses.get(
            "DEFAULT_5XX" if own_status >= 500 else "DEFAULT_4XX")
        text = message or GATEWAY_MESSAGES.get(response_type) or _phrase(own_status)
        code = spec.status if spec is not None and spec.status is not None else own_status
        headers = list(spec.headers.items()) if spec is not None else []
        template = spec.templates.get("application/json") if spec is not None else None
        if template is None:
            return code, headers, _json_body({"message": text})
        variables = {"requestId": request_id, "extendedRequestId": request_id, "apiId": self.api_id,
                     "stage": self.stage, "httpMethod": method, "resourcePath": resource,
                     "path": f"/{self.stage}{path}", "error.message": text, "error.messageString": json.dumps(text),
                     "error.responseType": response_type}
        return code, headers, render_gateway_template(template, variables).encode("utf-8")

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


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


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
        """Any other method (TRACE, PROPFIND, made-up ones) is routed like the others (MISSING_AUTHENTICATION_TOKEN
        unless a route takes ANY method)."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP server's own errors (a malformed request line, headers too long): DEFAULT_4XX/5XX, not HTML."""
        if self.request_version == "HTTP/0.9":  # a request line it could not read: answer with a status line
            self.request_version = "HTTP/1.1"
        self._request_id = getattr(self, "_request_id", "") or str(uuid.uuid4())
        self._answer_gateway("DEFAULT_5XX" if code >= 500 else "DEFAULT_4XX",
                             message=message or _phrase(code), status=code, close=True)

    def _answer_gateway(self, response_type: str, *, message: str | None = None, status: int | None = None,
                        resource: str = "", close: bool = False) -> int:
        split = urlsplit(getattr(self, "path", "") or "/")
        code, headers, body = self.api.gateway_response(
            response_type, request_id=self._request_id, method=(getattr(self, "command", "") or "").upper(),
            path=split.path or "/", resource=resource, message=message, status=status)
        self._send(code, body, headers, close=close)
        return code

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
            self._answer_gateway("REQUEST_TOO_LARGE", close=True)
            return
        except BadContentLength:
            self._answer_gateway("BAD_REQUEST_BODY", message="Content-Length must be a number of bytes", close=True)
            return
        except ValueError:
            self._answer_gateway("BAD_REQUEST_BODY", message="the chunked request body is malformed", close=True)
            return
        matches = self.api.match(path)
        chosen = next(((r, p) for r, p in matches if r.method in (method, "ANY")), None)
        if chosen is None and method == "HEAD":
            chosen = next(((r, p) for r, p in matches if r.method == "GET"), None)
        if chosen is None:
            if not matches and path == "/" and method in ("GET", "HEAD"):
                self._send(200, _json_body(self.api.index()))
            elif matches and method == "OPTIONS" and self.api.cors is not None:
                self._send(204, b"", list(self.api.cors.items()))
            else:  # an unknown route, or a method the path does not define: API Gateway's answer for both
                self._answer_gateway("MISSING_AUTHENTICATION_TOKEN")
            return
        route, params = chosen
        event = self.api.build_event(
            route=route, method=method, raw_path=path, query=split.query, headers=list(self.headers.items()),
            body=body, path_parameters=params, source_ip=self.client_address[0], request_id=self._request_id)
        try:
            self.api.authorize(route, event, self._request_id)
            status, headers, payload = self.api.integrate(route, event, self._request_id)
        except GatewayAnswer as answer:
            status = self._answer_gateway(answer.response_type, message=answer.message, status=answer.status,
                                          resource=route.path)
            log.info("%s %s -> %s %d (%.0f ms)", method, path, answer.response_type, status,
                     (time.perf_counter() - started) * 1000)
            return
        self._send(status, payload, headers)
        log.info("%s %s -> %s %d (%.0f ms)", method, path, route.function, status,
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
