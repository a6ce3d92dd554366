"""The template's API access control and the local API Gateway that runs it: the REQUEST authorizer (its event,
the 401 without calling it, its cache and ttl, Deny and failures), the usage plan's API keys and throttle, the
integration timeout, and the template's GatewayResponses (status, our error JSON, the CORS header).

The gateway runs on a real port; the functions behind it are stand-ins (the end-to-end run of the real authorizer
function is tests/api/test_access.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callsight.access import NOT_AUTHENTICATED_MESSAGE
from callsight.models import ErrorResponse
from callsight.processes import DOCS_PATH, OPENAPI_PATH
from infra.apigw import ApiGateway
from infra.lambdas import FunctionError, FunctionNotFound
from infra.template import ApiAuthorizer, ApiRoute, GatewayResponse, Template, TemplateError, UsagePlanSpec
from tests.clock import FakeClock

TEMPLATE = Template()
RESPONSES = TEMPLATE.gateway_responses
ORIGIN = TEMPLATE.parameters["AllowedOrigin"]
AUTHORIZER = ApiAuthorizer(name="Keys", function="AuthFn", identity_headers=("x-api-key",), ttl_s=60)
ROUTES = [
    ApiRoute("Things", "T", "/api/things", "GET", authorizer="Keys", api_key_required=True),
    ApiRoute("Things", "P", "/api/things", "POST", authorizer="Keys", api_key_required=True),
    ApiRoute("Slow", "S", "/api/slow", "GET", authorizer="Keys", api_key_required=True),
    ApiRoute("Docs", "D", "/api/docs", "GET"),
]
#: the tests' usage plan (throttling out of the way) and the throttle test's
WIDE_PLAN = UsagePlanSpec(logical_id="Plan", name="plan", api="Api", stage="test", rate_limit=1000.0, burst_limit=1000)
PLAN = UsagePlanSpec(logical_id="Plan", name="plan", api="Api", stage="test", rate_limit=1.0, burst_limit=3)
ALLOW_ALL = "arn:aws:execute-api:us-east-1:123456789012:api1/test/*/*"


def allow(key: str, resource: str = ALLOW_ALL, effect: str = "Allow") -> dict[str, Any]:
    """What the real authorizer answers for a valid key (the contract's shape)."""
    return {"principalId": f"id-{key}", "context": {"key_id": f"id-{key}", "client_ids": "demo", "n": 3, "ok": True},
            "usageIdentifierKey": f"usage-{key}",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]}}


class Functions:
    """Stands in for the dispatcher: the authorizer answers from ``answers`` by the key (a missing key raises
    ``Unauthorized`` as the real one does), the handlers echo what the gateway gave them."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()

    def __call__(self, function: str, event: dict[str, Any], request_id: str) -> Any:
        self.events.append((function, event))
        if function == "AuthFn":
            key = next((v for k, v in event["headers"].items() if k.lower() == "x-api-key"), None)
            answer = self.answers.get(key)
            if answer is None:
                raise FunctionError({"errorType": "Exception", "errorMessage": "Unauthorized"})
            if isinstance(answer, BaseException):
                raise answer
            return answer
        if function == "Slow":
            self.release.wait(30)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
                "body": json.dumps(event["requestContext"].get("authorizer"))}

    def authorizer_events(self) -> list[dict[str, Any]]:
        return [event for function, event in self.events if function == "AuthFn"]


class Plan:
    """The usage plan's enabled API key values, as the embedded AWS would list them; counts the lookups."""

    def __init__(self, *values: str) -> None:
        self.values = set(values)
        self.lookups = 0

    def __call__(self) -> set[str]:
        self.lookups += 1
        return set(self.values)


@pytest.fixture
def functions() -> Iterator[Functions]:
    fake = Functions()
    yield fake
    fake.release.set()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def plan() -> Plan:
    return Plan("usage-k1", "usage-k2")


def start_gateway(functions: Functions, clock: FakeClock, plan: Plan, *, ttl_s: int = 60,
                  integration_timeout_s: float = 29.0, usage_plan: UsagePlanSpec = WIDE_PLAN) -> ApiGateway:
    gateway = ApiGateway(ROUTES, functions, port=0, stage="test", api_id="api1",
                         cors={"Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Headers": "x-api-key"},
                         authorizers={"Keys": ApiAuthorizer("Keys", "AuthFn", ("x-api-key",), ttl_s)},
                         gateway_responses=RESPONSES, usage_plan=usage_plan, usage_plan_keys=plan, clock=clock,
                         integration_timeout_s=integration_timeout_s)
    gateway.start()
    return gateway


@pytest.fixture
def gateway(functions: Functions, clock: FakeClock, plan: Plan) -> Iterator[ApiGateway]:
    running = start_gateway(functions, clock, plan)
    yield running
    running.stop()


@pytest.fixture
def http(gateway: ApiGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def assert_gateway_error(answer: httpx.Response, status: int, code: str) -> ErrorResponse:
    """API Gateway's own answer: our error JSON (callsight.models.ErrorResponse, each error naming a field and a
    problem) with the CORS header of the frontend's origin."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = ErrorResponse.model_validate_json(answer.content)
    assert body.error == code and body.message and body.errors, body
    return body


# ------------------------------------------------------------------------------------------ the authorizer
@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}], ids=["missing", "empty"])
def test_no_identity_header_is_401_without_calling_the_authorizer(http: httpx.Client, functions: Functions,
                                                                  headers: dict[str, str]) -> None:
    body = assert_gateway_error(http.get("/api/things", headers=headers), 401, "unauthorized")
    assert body.message == NOT_AUTHENTICATED_MESSAGE
    assert not functions.events


def test_an_unknown_key_is_401_and_the_handler_never_runs(http: httpx.Client, functions: Functions) -> None:
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "nope"}), 401, "unauthorized")
    assert [function for function, _ in functions.events] == ["AuthFn"]


def test_a_valid_key_reaches_the_handler_with_the_authorizers_context(http: httpx.Client,
                                                                      functions: Functions) -> None:
    functions.answers["k1"] = allow("k1")
    answer = http.get("/api/things?client_id=demo", headers={"X-Api-Key": "k1"})
    assert answer.status_code == 200, answer.text
    # the context as API Gateway passes it to a REST proxy integration: strings, with the principalId
    assert answer.json() == {"key_id": "id-k1", "client_ids": "demo", "n": "3", "ok": "true", "principalId": "id-k1"}
    (event,) = functions.authorizer_events()
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == "arn:aws:execute-api:us-east-1:123456789012:api1/test/GET/api/things"
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/api/things", "/api/things", "GET")
    assert event["headers"]["X-Api-Key"] == "k1" and event["queryStringParameters"] == {"client_id": "demo"}
    assert event["requestContext"]["stage"] == "test" and "body" not in event


def test_the_answer_is_cached_by_the_key_for_the_ttl(http: httpx.Client, functions: Functions,
                                                     clock: FakeClock) -> None:
    functions.answers.update({"k1": allow("k1"), "k2": allow("k2")})
    for _ in range(3):
        assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
    assert http.post("/api/things", headers={"x-api-key": "k1"}).status_code == 200  # another route, same answer
    assert len(functions.authorizer_events()) == 1
    assert http.get("/api/things", headers={"x-api-key": "k2"}).status_code == 200  # another key: its own call
    assert len(functions.authorizer_events()) == 2
    del functions.answers["k1"]  # revoked: the cached answer still holds until the ttl ends
    clock.now += 59
    assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
    clock.now += 1
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k1"}), 401, "unauthorized")
    assert len(functions.authorizer_events()) == 3


def test_unauthorized_answers_are_not_cached(http: httpx.Client, functions: Functions) -> None:
    assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 401
    functions.answers["k1"] = allow("k1")  # e.g. a key created a moment later
    assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200


def test_ttl_zero_authorizes_every_request(functions: Functions, clock: FakeClock, plan: Plan) -> None:
    gateway = start_gateway(functions, clock, plan, ttl_s=0)
    try:
        functions.answers["k1"] = allow("k1")
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            for _ in range(3):
                assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
        assert len(functions.authorizer_events()) == 3
    finally:
        gateway.stop()


def test_a_cached_policy_is_evaluated_against_each_methods_arn(http: httpx.Client, functions: Functions) -> None:
    """Why the authorizer allows the whole stage: a policy naming only the first method's ARN, cached by the key,
    denies every other route for the ttl (as on AWS)."""
    functions.answers["k1"] = allow("k1", resource=ALLOW_ALL.replace("*/*", "GET/api/things"))
    assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
    assert_gateway_error(http.post("/api/things", headers={"x-api-key": "k1"}), 403, "forbidden")
    assert len(functions.authorizer_events()) == 1


def test_an_explicit_deny_is_403(http: httpx.Client, functions: Functions) -> None:
    functions.answers["k1"] = allow("k1", effect="Deny")
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k1"}), 403, "forbidden")
    assert [function for function, _ in functions.events] == ["AuthFn"]


@pytest.mark.parametrize("answer", [
    None, "Allow", {"policyDocument": allow("k1")["policyDocument"]},
    {**allow("k1"), "policyDocument": {"Statement": []}},
    {**allow("k1"), "policyDocument": {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}},
    {**allow("k1"), "context": {"nested": {"a": 1}}},
    {**allow("k1"), "usageIdentifierKey": 7},
    FunctionError({"errorType": "KeyError", "errorMessage": "'table'"}),
    FunctionError({"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 10.00 seconds"}),
], ids=["none", "text", "no-principal", "no-statement", "bad-effect", "nested-context", "bad-usage-key", "crash",
        "timeout"])
def test_an_authorizer_failure_or_malformed_answer_is_500_and_logged(http: httpx.Client, functions: Functions,
                                                                     caplog: pytest.LogCaptureFixture,
                                                                     answer: Any) -> None:
    functions.answers["k1"] = answer if answer is not None else []
    with caplog.at_level(logging.ERROR, logger="infra.apigw"):
        assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k1"}), 500, "authorizer_failed")
    assert "authorizer Keys (AuthFn)" in caplog.text
    assert not [f for f, _ in functions.events if f != "AuthFn"]


def test_an_authorizer_that_cannot_be_invoked_is_a_configuration_error(http: httpx.Client,
                                                                       functions: Functions) -> None:
    functions.answers["k1"] = FunctionNotFound("AuthFn")
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k1"}), 500, "authorizer_failed")


def test_authorizer_failures_are_aws_authorizer_configuration_error(functions: Functions, clock: FakeClock,
                                                                    plan: Plan) -> None:
    """AWS answers an authorizer's error (other than Unauthorized), a malformed answer or none in time with a 500 of
    type AUTHORIZER_CONFIGURATION_ERROR (``AuthorizerConfigurationException``), not AUTHORIZER_FAILURE."""
    by_type = {"DEFAULT_5XX": GatewayResponse("DEFAULT_5XX", None, {}, {
        "application/json": '{"type": "$context.error.responseType"}'})}
    gateway = ApiGateway(ROUTES, functions, port=0, stage="test", api_id="api1",
                         authorizers={"Keys": AUTHORIZER}, gateway_responses=by_type, usage_plan=WIDE_PLAN,
                         usage_plan_keys=plan, clock=clock)
    functions.answers.update({"crash": FunctionError({"errorType": "KeyError", "errorMessage": "'table'"}),
                              "malformed": {**allow("k1"), "context": {"nested": {"a": 1}}},
                              "uninvokable": FunctionNotFound("AuthFn")})
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            for key in ("crash", "malformed", "uninvokable"):
                answer = http.get("/api/things", headers={"x-api-key": key})
                assert (answer.status_code, answer.json()) == (500, {"type": "AUTHORIZER_CONFIGURATION_ERROR"}), key
    finally:
        gateway.stop()


def test_a_route_without_auth_needs_no_key_and_calls_no_authorizer(http: httpx.Client, functions: Functions) -> None:
    answer = http.get("/api/docs")
    assert answer.status_code == 200 and answer.json() is None
    assert [function for function, _ in functions.events] == ["Docs"]


def test_the_preflight_needs_no_key(http: httpx.Client, functions: Functions) -> None:
    answer = http.options("/api/things", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                                  "Access-Control-Request-Headers": "x-api-key"})
    assert answer.status_code == 204 and answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert not functions.events


# ------------------------------------------------------------------------------------------ API keys, throttling
def test_a_usage_key_outside_the_plan_is_403(http: httpx.Client, functions: Functions, plan: Plan) -> None:
    functions.answers["k3"] = allow("k3")  # the authorizer allows it, the plan has no such key
    functions.answers["none"] = {**allow("none"), "usageIdentifierKey": None}
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k3"}), 403, "forbidden")
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "none"}), 403, "forbidden")
    plan.values.add("usage-k3")  # e.g. a key issued a moment ago: found at once, not after the lookup's cache
    assert http.get("/api/things", headers={"x-api-key": "k3"}).status_code == 200


def test_the_plans_keys_are_looked_up_once_while_remembered(http: httpx.Client, functions: Functions, plan: Plan,
                                                            clock: FakeClock) -> None:
    functions.answers["k1"] = allow("k1")
    for _ in range(3):
        assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
        clock.now += 1
    assert plan.lookups == 1
    plan.values.discard("usage-k1")  # its API Gateway key deleted (revoke-key): refused once the lookup is old
    clock.now += 5
    assert_gateway_error(http.get("/api/things", headers={"x-api-key": "k1"}), 403, "forbidden")


def test_each_key_is_throttled_by_the_plans_rate_and_burst(functions: Functions, clock: FakeClock,
                                                           plan: Plan) -> None:
    gateway = start_gateway(functions, clock, plan, usage_plan=PLAN)  # burst 3, 1 a second
    functions.answers.update({"k1": allow("k1"), "k2": allow("k2")})
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert [http.get("/api/things", headers={"x-api-key": "k1"}).status_code for _ in range(3)] == [200] * 3
            throttled = http.get("/api/things", headers={"x-api-key": "k1"})
            assert_gateway_error(throttled, 429, "throttled")
            assert throttled.headers["Retry-After"] == "1"
            assert throttled.headers["Access-Control-Expose-Headers"] == "Retry-After"  # the frontend may read it
            assert http.get("/api/things", headers={"x-api-key": "k2"}).status_code == 200  # its own bucket
            clock.now += 1  # one more request a second (the rate)
            assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 200
            assert http.get("/api/things", headers={"x-api-key": "k1"}).status_code == 429
    finally:
        gateway.stop()
    assert len([f for f, _ in functions.events if f == "Things"]) == 5  # throttled requests never reach it


# ------------------------------------------------------------------------------------------ the integration
def test_an_integration_past_the_timeout_is_504_while_the_function_runs_on(functions: Functions, clock: FakeClock,
                                                                           plan: Plan) -> None:
    gateway = start_gateway(functions, clock, plan, integration_timeout_s=0.5)
    try:
        functions.answers["k1"] = allow("k1")
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            answer = http.get("/api/slow", headers={"x-api-key": "k1"})
        assert_gateway_error(answer, 504, "timeout")
        assert not functions.release.is_set()  # answered while the function is still running
    finally:
        functions.release.set()
        gateway.stop()


# ------------------------------------------------------------------------------------------ the template
REQUIRED_RESPONSES = {
    "UNAUTHORIZED": 401, "ACCESS_DENIED": 403, "AUTHORIZER_FAILURE": 500, "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "INVALID_API_KEY": 403, "THROTTLED": 429, "QUOTA_EXCEEDED": 429, "INTEGRATION_TIMEOUT": 504,
    "INTEGRATION_FAILURE": 502, "MISSING_AUTHENTICATION_TOKEN": 404, "REQUEST_TOO_LARGE": 413,
    "BAD_REQUEST_BODY": 400, "BAD_REQUEST_PARAMETERS": 400, "DEFAULT_4XX": None, "DEFAULT_5XX": None,
}


def test_the_templates_gateway_responses_carry_cors_and_our_error_json() -> None:
    assert {kind: response.status for kind, response in RESPONSES.items()} == REQUIRED_RESPONSES
    gateway = ApiGateway([], lambda *_: None, gateway_responses=RESPONSES)
    for kind, response in RESPONSES.items():
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN, kind
        status, headers, body = gateway.gateway_response(kind, request_id="r", method="GET", path="/x",
                                                         message='API Gateway\'s "own" text', status=418)
        assert ("Access-Control-Allow-Origin", ORIGIN) in headers
        answer = ErrorResponse.model_validate_json(body)
        assert answer.errors and answer.message, kind
        assert status == (REQUIRED_RESPONSES[kind] or 418)
    assert RESPONSES["UNAUTHORIZED"].templates["application/json"].count(NOT_AUTHENTICATED_MESSAGE) == 1


def test_every_route_of_the_template_needs_a_key_but_the_api_description() -> None:
    open_paths = {OPENAPI_PATH, DOCS_PATH}
    for route in TEMPLATE.api_routes:
        expected = (None, False) if route.path in open_paths else ("ApiKeyAuthorizer", True)
        assert (route.authorizer, route.api_key_required) == expected, route
    (authorizer,) = TEMPLATE.api_authorizers.values()
    assert (authorizer.function, authorizer.identity_headers) == ("AuthorizeRequestFunction", ("x-api-key",))
    assert authorizer.ttl_s == int(TEMPLATE.parameters["ApiKeyCacheSeconds"])
    assert Template(parameter_overrides={"ApiKeyCacheSeconds": 5}).api_authorizers[authorizer.name].ttl_s == 5
    # the preflight stays open (the local gateway answers it without authorization) and lets the key through
    auth = TEMPLATE.properties("CallsightApi")["Auth"]
    assert auth["AddDefaultAuthorizerToCorsPreflight"] is False and auth["AddApiKeyRequiredToCorsPreflight"] is False
    assert TEMPLATE.api_cors is not None
    assert "x-api-key" in TEMPLATE.api_cors["Access-Control-Allow-Headers"].lower().split(",")


def test_the_origin_is_a_required_setting_that_never_allows_any_origin(tmp_path: Path) -> None:
    assert "Default" not in TEMPLATE.raw["Parameters"]["AllowedOrigin"]
    other = Template(parameter_overrides={"AllowedOrigin": "https://callsight.example.com"})
    assert {r.headers["Access-Control-Allow-Origin"] for r in other.gateway_responses.values()} == {
        "https://callsight.example.com"}
    assert other.api_cors is not None and other.api_cors["Access-Control-Allow-Origin"] == "https://callsight.example.com"
    for bad in ("*", "https://a.example/app", "https://*.example.com", ""):
        with pytest.raises(TemplateError, match="AllowedOrigin"):
            Template(parameter_overrides={"AllowedOrigin": bad})


def test_the_usage_plan_throttles_by_the_parameters() -> None:
    (plan,) = Template(parameter_overrides={"ApiKeyRateLimit": 3, "ApiKeyBurstLimit": 7}).usage_plans.values()
    assert (plan.api, plan.stage, plan.rate_limit, plan.burst_limit) == ("CallsightApi", "prod", 3.0, 7)
    assert "UsagePlanId" in TEMPLATE.raw["Outputs"]


SMALL = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: dev
      ApiKeySourceType: {source}
      {api_extra}
      Auth:
        DefaultAuthorizer: Keys
        ApiKeyRequired: true
        {auth_extra}
        Authorizers:
          Keys:
            FunctionArn: !GetAtt Auth.Arn
            FunctionPayloadType: {payload}
            Identity: {identity}
      GatewayResponses:
        UNAUTHORIZED:
          StatusCode: "401"
          ResponseParameters: {{Headers: {{Access-Control-Allow-Origin: "{origin}"}}}}
          ResponseTemplates: {{application/json: '{body}'}}
  Plan:
    Type: AWS::ApiGateway::UsagePlan
    Properties:
      ApiStages: [{{ApiId: !Ref Api, Stage: !Ref Api.Stage}}]
      Throttle: {{RateLimit: 2, BurstLimit: 4}}
      {plan_extra}
  Auth:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: fn, Handler: app.handler}}
  Work:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn
      Handler: app.handler
      Events:
        Closed: {{Type: Api, Properties: {{RestApiId: !Ref Api, Path: /closed, Method: get}}}}
        Open:
          Type: Api
          Properties: {{RestApiId: !Ref Api, Path: /open, Method: get, Auth: {{Authorizer: {open_authorizer},
                        ApiKeyRequired: false}}}}
"""
GOOD = {"source": "AUTHORIZER", "payload": "REQUEST", "identity": "{Headers: [X-Api-Key], ReauthorizeEvery: 5}",
        "origin": "'https://app.example'", "body": '{"error": "unauthorized", "message": $context.error.messageString}',
        "plan_extra": "", "open_authorizer": "NONE", "api_extra": "", "auth_extra": ""}


def small_template(tmp_path: Path, **changes: str) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(SMALL.format(**{**GOOD, **changes}), encoding="utf-8")
    return Template(path)


def test_routes_take_the_default_authorizer_unless_they_opt_out(tmp_path: Path) -> None:
    template = small_template(tmp_path)
    routes = {route.path: (route.authorizer, route.api_key_required) for route in template.api_routes}
    assert routes == {"/closed": ("Keys", True), "/open": (None, False)}
    assert template.api_authorizers == {"Keys": ApiAuthorizer("Keys", "Auth", ("x-api-key",), 5)}
    assert template.usage_plans["Plan"].stage == "dev" and template.usage_plans["Plan"].burst_limit == 4
    assert template.gateway_responses["UNAUTHORIZED"].headers == {"Access-Control-Allow-Origin": "https://app.example"}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"payload": "TOKEN"}, "REQUEST"),
    ({"identity": "{QueryStrings: [key]}"}, "Identity"),
    ({"identity": "{Headers: [x-api-key], ReauthorizeEvery: 7200}"}, "ReauthorizeEvery"),
    ({"source": "HEADER"}, "ApiKeySourceType"),
    ({"open_authorizer": "AWS_IAM"}, "AWS_IAM"),
    ({"origin": "method.request.header.origin"}, "static"),
    ({"body": '{"message": $context.identity.sourceIp}'}, "identity.sourceIp"),
    ({"body": '{"message": "unclosed'}, "not JSON"),
    ({"plan_extra": "Quota: {Limit: 5, Period: DAY}"}, "Quota"),
])
def test_what_the_local_gateway_does_not_emulate_is_an_explicit_error(tmp_path: Path, changes: dict[str, str],
                                                                      problem: str) -> None:
    template = small_template(tmp_path, **changes)
    with pytest.raises(TemplateError, match=problem):
        _ = (template.api_routes, template.api_authorizers, template.gateway_responses, template.usage_plans)


@pytest.mark.parametrize(("auth_extra", "problem"), [
    ("", "AddDefaultAuthorizerToCorsPreflight"),
    ("AddDefaultAuthorizerToCorsPreflight: false", "AddApiKeyRequiredToCorsPreflight"),
    ("AddApiKeyRequiredToCorsPreflight: false", "AddDefaultAuthorizerToCorsPreflight"),
])
def test_a_preflight_that_aws_would_authorize_is_an_explicit_error(tmp_path: Path, auth_extra: str,
                                                                   problem: str) -> None:
    """SAM's defaults (true) put the authorizer and the API key on the CORS preflight, which the local gateway answers
    open: such a template would work here and fail in a browser on AWS."""
    cors = "Cors: \"'https://app.example'\""
    with pytest.raises(TemplateError, match=problem):
        _ = small_template(tmp_path, api_extra=cors, auth_extra=auth_extra).api_cors
    both = "AddDefaultAuthorizerToCorsPreflight: false\n        AddApiKeyRequiredToCorsPreflight: false"
    assert small_template(tmp_path, api_extra=cors, auth_extra=both).api_cors == {
        "Access-Control-Allow-Origin": "https://app.example"}
