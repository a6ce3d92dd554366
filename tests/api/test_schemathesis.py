"""Bad input at scale: schemathesis generates requests from the served OpenAPI description and sends each to the
package platform twice, without an API key and with the platform's valid one. No answer is a 5xx, every answer is
one the description documents (status, content type, schema), and every 4xx is our JSON naming the problem.

Deterministic (Hypothesis derandomized: a fixed seed, no example database) and bounded (``EXAMPLES`` per operation
and generation mode, a hard timeout). Generated client ids are not clinics of the platform (404; an example naming
a registered one is left out), so no run starts and no clinic's lock is taken: the package's other tests are not
disturbed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.internal.conjecture import providers
from hypothesis.internal.constants_ast import Constants
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from callsight.access import API_KEY_HEADER
from callsight.dal.clients import ClientRepository
from callsight.dal.table import Table
from callsight.processes import DOCS_PATH, OPENAPI_PATH, PIPELINE_STEPS, REPORT_PATH, Process
from infra.openapi import DESCRIPTION_FILE
from infra.platform import LocalPlatform

pytestmark = pytest.mark.platform

#: examples per operation and generation mode (positive, negative); each is sent twice (no key, the valid key)
EXAMPLES = 30
#: at least this many generated requests in all
MIN_REQUESTS = 1000


def errors_name_the_problem(ctx: Any, response: Any, case: Case) -> bool | None:
    """Every 4xx is JSON ``{"error", "message", "errors": [{"field", "problem"}]}`` saying what was wrong."""
    if not 400 <= response.status_code < 500:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and {"error", "message", "errors"} <= set(body), body
    assert body["error"] and body["message"], body
    for problem in body["errors"]:
        assert problem.get("field") and problem.get("problem"), body
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, errors_name_the_problem]


@pytest.fixture(scope="module")
def served(platform: LocalPlatform) -> Any:
    return schemathesis.openapi.from_url(platform.api_url + OPENAPI_PATH, timeout=30)


def test_the_served_description_is_the_committed_file(platform: LocalPlatform) -> None:
    answer = httpx.get(platform.api_url + OPENAPI_PATH, headers={"Origin": platform.allowed_origin},
                       timeout=30)  # no key
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.text == DESCRIPTION_FILE.read_text(encoding="utf-8")
    assert answer.headers.get("access-control-allow-origin") == platform.allowed_origin


def test_the_docs_page_is_swagger_ui_reading_the_description_beside_it(platform: LocalPlatform) -> None:
    answer = httpx.get(platform.api_url + DOCS_PATH, timeout=30)  # no key
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in answer.text and f'prefix + "{OPENAPI_PATH}"' in answer.text


def test_real_answers_conform_for_a_clinic_that_exists(platform: LocalPlatform, served: Any,
                                                       month: dict[str, str], new_client: Callable[..., str]) -> None:
    """The generated clinics do not exist: a 200 of every status route, the report's answer and a start's 202 are
    checked here for real clinics."""
    headers = platform.api_headers
    for process in (*PIPELINE_STEPS, Process.PIPELINE):
        case = served[process.spec.status_path]["GET"].Case(query={"client_id": "demo", **month})
        answer = case.call_and_validate(base_url=platform.api_url, headers=headers, checks=CHECKS)
        assert answer.status_code == 200, answer.text
    for report_format in ("json", "md"):
        report = served[REPORT_PATH]["GET"].Case(query={"client_id": "demo", **month, "format": report_format})
        answer = report.call_and_validate(base_url=platform.api_url, headers=headers, checks=CHECKS)
        assert answer.status_code in (200, 404), answer.text
    fresh = new_client()  # a clinic of its own: the run (nothing synced, nothing to transcribe) locks only it
    start = served[Process.TRANSCRIBE.spec.start_path]["POST"].Case(body={"client_id": fresh, **month})
    assert start.call_and_validate(base_url=platform.api_url, headers=headers, checks=CHECKS).status_code == 202


def _names_a_clinic(case: Case, clinics: set[str]) -> bool:
    """A generated request for a registered clinic (Hypothesis also draws constants of the code, "demo" among
    them) could start a real run and take that clinic's lock: such examples are left out."""
    for given_values in (case.query, case.body):
        if isinstance(given_values, dict):
            client_id = given_values.get("client_id")
            if isinstance(client_id, str) and client_id.strip() in clinics:
                return True
    return False


def _generated(served: Any) -> Iterator[tuple[Any, GenerationMode]]:
    for result in served.get_all_operations():
        operation = result.ok()
        has_input = bool(operation.query or operation.body)
        yield operation, GenerationMode.POSITIVE
        if has_input:
            yield operation, GenerationMode.NEGATIVE


@pytest.mark.timeout(240)
def test_generated_requests_with_and_without_a_key(platform: LocalPlatform, served: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Hypothesis also draws constants it finds in the loaded modules of the code (callsight, infra): which modules
    # are loaded depends on the tests run before, and reading them (ast.parse) deep in a generation's stack hits a
    # CPython 3.11 bug ("AST constructor recursion depth mismatch"). Without them the examples depend on the seed
    # and the description only. Its caches go to tmp_path, not the working tree.
    monkeypatch.setattr(providers, "_get_local_constants", Constants)
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path))
    sent: Counter[tuple[str, str]] = Counter()
    statuses: Counter[tuple[str, int]] = Counter()
    keyed = platform.api_headers
    secured = {f"{method.upper()} {path}" for path, item in served.raw_schema["paths"].items()
               for method, operation in item.items() if operation["security"]}
    clinics = {client.client_id for client in ClientRepository(Table(platform.table_name)).registered()}
    assert "demo" in clinics
    started = time.monotonic()

    def send(case: Case, headers: dict[str, str], who: str) -> None:
        # the key is ours to give (schemathesis may generate one for the security scheme); a negative example that
        # violates the scheme goes without it even with the key given (its 401 is what the check expects)
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != API_KEY_HEADER}
        answer = case.call_and_validate(base_url=platform.api_url, headers=headers, checks=CHECKS, timeout=60)
        sent[case.operation.label, who] += 1
        statuses[who, answer.status_code] += 1
        if who == "no key" and case.operation.label in secured:
            assert answer.status_code == 401, (case.operation.label, answer.status_code, answer.text)

    for operation, mode in _generated(served):
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Case) -> None:
            assume(not _names_a_clinic(case, clinics))
            send(case, {}, "no key")
            send(case, keyed, "key")

        run()

    elapsed = time.monotonic() - started
    total = sum(sent.values())
    print(f"schemathesis: {total} requests in {elapsed:.0f} s; statuses {sorted(statuses.items())}")
    assert total >= MIN_REQUESTS, sent
    # every operation, without a key and with it (schemathesis leaves out the one serving the description itself:
    # test_the_served_description_is_the_committed_file reads it)
    labels = {f"{method.upper()} {path}" for path, item in served.raw_schema["paths"].items() for method in item}
    assert {label for label, _ in sent} == labels - {f"GET {OPENAPI_PATH}"}
    assert all(sent[label, who] for label, _ in sent for who in ("no key", "key"))
    assert statuses["key", 404] and statuses["key", 400]  # the key's requests reached the handlers
