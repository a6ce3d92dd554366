"""API access control end to end on the package platform: the template's REQUEST authorizer (the real function in
its container), the usage plan's keys in the embedded AWS, the handlers' clinic check and the gateway's own
answers.

- no key, an unknown, a malformed or a revoked key: 401 on every /api route, JSON with the CORS header;
- a key of clinic A cannot start, read the status of or read the report of clinic B by any route (403 JSON with
  the CORS header), while it can for A; an unknown clinic is 403 too (no probing which clinics exist);
- a revoked key stops working within the authorizer's cache time; a key whose API Gateway key is gone is 403;
- the OpenAPI description and Swagger UI need no key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from callsight.access import NOT_AUTHENTICATED_MESSAGE
from callsight.dal.api_keys import ApiKeyRepository
from callsight.dal.table import Table
from callsight.logic.api_keys import ApiKeyIssuer, gateway_key_name
from callsight.models import ErrorResponse
from callsight.processes import DOCS_PATH, OPENAPI_PATH, PROCESSES, REPORT_PATH, Process
from infra.platform import LocalPlatform
from tests.api.conftest import wait_finished

pytestmark = pytest.mark.platform

#: every /api route that takes a key: (method, path)
ROUTES = ([("POST", spec.start_path) for spec in PROCESSES.values()]
          + [("GET", spec.status_path) for spec in PROCESSES.values()] + [("GET", REPORT_PATH)])
#: a range long before the stub's calls (its last 30 days): starts on it run, and end, at once
OLD_DAY = date.today() - timedelta(days=400)
OLD_RANGE = {"start_date": OLD_DAY.isoformat(), "end_date": (OLD_DAY + timedelta(days=1)).isoformat()}


@pytest.fixture(scope="module")
def issuer(platform: LocalPlatform) -> ApiKeyIssuer:
    """Keys made as ``callsight-admin create-key`` makes them: the table and the platform's usage plan (moto)."""
    assert platform.usage_plan_id, "the platform provisions the template's usage plan"
    return ApiKeyIssuer(ApiKeyRepository(Table(platform.table_name)), platform.boto3_client("apigateway"),
                        platform.usage_plan_id)


@pytest.fixture
def anonymous(platform: LocalPlatform) -> Iterator[httpx.Client]:
    """A browser on the frontend's origin, with no key."""
    with httpx.Client(base_url=platform.api_url, headers={"Origin": platform.allowed_origin}, timeout=60) as client:
        yield client


def request(client: httpx.Client, method: str, path: str, client_id: str, key: str | None) -> httpx.Response:
    headers = {"x-api-key": key} if key is not None else {}
    if method == "POST":
        return client.post(path, json={"client_id": client_id, **OLD_RANGE}, headers=headers)
    return client.get(path, params={"client_id": client_id, **OLD_RANGE}, headers=headers)


def assert_error(answer: httpx.Response, status: int, code: str, origin: str) -> ErrorResponse:
    """Our error JSON (each error naming a field and a problem), readable by the frontend (its CORS origin)."""
    assert answer.status_code == status, (answer.request.method, answer.request.url.path, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers.get("Access-Control-Allow-Origin") == origin, answer.headers
    body = ErrorResponse.model_validate_json(answer.content)
    assert body.error == code and body.errors, body
    return body


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; how long that took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - started


def cache_seconds(platform: LocalPlatform) -> int:
    return int(platform.template.parameters["ApiKeyCacheSeconds"])


# ------------------------------------------------------------------------------------------ 401
@pytest.mark.parametrize("key", [None, f"csk_{'0' * 12}_{'a' * 43}", "not-a-callsight-key"],
                         ids=["no-key", "unknown-key", "malformed-key"])
def test_every_route_is_401_without_a_valid_key(platform: LocalPlatform, anonymous: httpx.Client,
                                                key: str | None) -> None:
    for method, path in ROUTES:
        body = assert_error(request(anonymous, method, path, "demo", key), 401, "unauthorized",
                            platform.allowed_origin)
        assert body.message == NOT_AUTHENTICATED_MESSAGE
        assert body.errors[0].field == "x-api-key"


def test_a_revoked_key_stops_working_within_the_cache_time(platform: LocalPlatform, anonymous: httpx.Client,
                                                           issuer: ApiKeyIssuer) -> None:
    key, record = issuer.issue("revoked soon", ["demo"], now=datetime.now(UTC))
    status_path = Process.SYNC.spec.status_path
    assert request(anonymous, "GET", status_path, "demo", key).status_code == 200
    issuer.revoke(record.key_id, now=datetime.now(UTC))
    took = wait_for(lambda: request(anonymous, "GET", status_path, "demo", key).status_code == 401,
                    timeout=cache_seconds(platform) + 15, what="refusing the revoked key")
    assert took <= cache_seconds(platform) + 15
    for method, path in ROUTES:
        assert_error(request(anonymous, method, path, "demo", key), 401, "unauthorized", platform.allowed_origin)


def test_a_key_whose_usage_plan_key_is_gone_is_403(platform: LocalPlatform, anonymous: httpx.Client,
                                                   issuer: ApiKeyIssuer) -> None:
    """The key's record is valid, but API Gateway no longer has its usage plan key (deleted by hand, or a
    revoke-key that failed half way): API Gateway refuses it."""
    key, record = issuer.issue("plan key deleted", ["demo"], now=datetime.now(UTC))
    status_path = Process.SYNC.spec.status_path
    assert request(anonymous, "GET", status_path, "demo", key).status_code == 200
    apigateway = platform.boto3_client("apigateway")
    (gateway_key,) = apigateway.get_api_keys(nameQuery=gateway_key_name(record.key_id))["items"]
    apigateway.delete_api_key(apiKey=gateway_key["id"])
    wait_for(lambda: request(anonymous, "GET", status_path, "demo", key).status_code == 403, timeout=30,
             what="refusing a key outside the usage plan")
    body = assert_error(request(anonymous, "GET", status_path, "demo", key), 403, "forbidden",
                        platform.allowed_origin)
    assert body.errors[0].field == "x-api-key"


# ------------------------------------------------------------------------------------------ 403: tenant isolation
@pytest.fixture
def clinics(issuer: ApiKeyIssuer, new_client: Callable[..., str]) -> dict[str, str]:
    """Clinic A with a key of its own, and clinic B."""
    a, b = new_client(), new_client()
    key, _ = issuer.issue("clinic A's frontend", [a], now=datetime.now(UTC))
    return {"a": a, "b": b, "key": key}


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_a_clinics_key_is_403_on_another_clinic_by_every_route(platform: LocalPlatform, anonymous: httpx.Client,
                                                               clinics: dict[str, str], method: str,
                                                               path: str) -> None:
    for other in (clinics["b"], "no-such-clinic"):  # an unknown clinic is 403, not 404: nothing to probe
        body = assert_error(request(anonymous, method, path, other, clinics["key"]), 403, "forbidden",
                            platform.allowed_origin)
        assert body.errors[0].field == "client_id" and other in body.message


def test_a_clinics_key_works_for_its_clinic_on_every_route(platform: LocalPlatform, anonymous: httpx.Client,
                                                           clinics: dict[str, str]) -> None:
    a, key = clinics["a"], clinics["key"]
    with httpx.Client(base_url=platform.api_url, headers={"x-api-key": key}, timeout=60) as own:
        for spec in PROCESSES.values():  # one after another: one process at a time per clinic
            started = request(anonymous, "POST", spec.start_path, a, key)
            assert started.status_code in (200, 202), started.text
            wait_finished(own, a, OLD_RANGE, status_path=spec.status_path, timeout=180)
            status = request(anonymous, "GET", spec.status_path, a, key)
            assert status.status_code == 200 and status.json()["client_id"] == a
    report = request(anonymous, "GET", REPORT_PATH, a, key)  # the report its recommendations run built
    assert report.status_code == 200 and report.json()["client_id"] == a, report.text


def test_the_all_clinics_key_reads_any_clinic(api: httpx.Client, clinics: dict[str, str]) -> None:
    answer = api.get(Process.SYNC.spec.status_path, params={"client_id": clinics["b"], **OLD_RANGE})
    assert answer.status_code == 200, answer.text


# ------------------------------------------------------------------------------------------ no key needed
@pytest.mark.parametrize("path", [OPENAPI_PATH, DOCS_PATH])
def test_the_api_description_needs_no_key(anonymous: httpx.Client, path: str) -> None:
    answer = anonymous.get(path)
    assert answer.status_code == 200, answer.text
    if path == OPENAPI_PATH:
        spec: dict[str, Any] = answer.json()
        assert spec["openapi"].startswith("3.")
    else:
        assert "text/html" in answer.headers["content-type"]
