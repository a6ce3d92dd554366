"""The OpenAPI description: the committed file is what the code generates, and it says what the API does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from openapi_spec_validator import validate

from callsight.http import ERROR_STATUSES
from callsight.processes import DOCS_PATH, OPENAPI_PATH, PIPELINE_STEPS, PROCESSES, REPORT_PATH, Process
from infra.openapi import (
    DESCRIPTION_FILE,
    GATEWAY_ONLY,
    GATEWAY_STATUSES,
    SECURITY_SCHEME,
    drift,
    generate,
    main,
    render,
)
from infra.template import Template
from tests.conftest import clear_client_caches

DOCS_ROUTES = {("get", OPENAPI_PATH), ("get", DOCS_PATH)}


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    yield generate()
    clear_client_caches()  # the handlers' imports built AWS clients aimed at the generator's closed port


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): operation for path, item in document["paths"].items() for method, operation in item.items()}


def _schema_ref(response: dict[str, Any], media_type: str = "application/json") -> str:
    return str(response["content"][media_type]["schema"]["$ref"]).rsplit("/", 1)[-1]


def test_the_committed_description_is_what_the_code_generates() -> None:
    problems = drift()
    assert not problems, (f"{DESCRIPTION_FILE.name} drifted from the handlers' routes and models: run `make openapi` "
                          "and commit it:\n" + "\n".join(problems[:30]))


def test_check_names_what_drifted(tmp_path: Path, document: dict[str, Any]) -> None:
    stale = json.loads(render(document))
    del stale["paths"][REPORT_PATH]
    stale["components"]["schemas"]["StartResponse"]["properties"]["gone"] = {"type": "string"}
    committed = tmp_path / "openapi.json"
    committed.write_text(render(stale))
    assert drift(committed) == ["/components/schemas/StartResponse/properties/gone: not generated any more",
                                f"/paths/{REPORT_PATH}: new"]
    committed.write_text(render(document))
    assert drift(committed) == []
    committed.write_text(json.dumps(document))  # the same content, formatted otherwise
    assert drift(committed) == [f"{committed}: formatted differently"]
    assert drift(tmp_path / "absent.json") == [f"{tmp_path / 'absent.json'}: missing"]


def test_check_exits_1_and_says_to_run_make_openapi(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("infra.openapi.drift", lambda: ["/paths/x: new"])
    assert main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "/paths/x: new" in err and "make openapi" in err


def test_the_output_is_deterministic(document: dict[str, Any]) -> None:
    text = render(document)
    assert text.endswith("}\n") and text == render(generate())
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_it_is_a_valid_openapi_3_1_document(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1") and document["servers"] == [{"url": "/"}]


def test_no_aws_call_happens_while_the_handlers_are_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def record(client: Any, operation: str, params: Any) -> Any:
        calls.append(operation)
        raise AssertionError(f"AWS called at import: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    try:
        assert generate()["paths"]
    finally:
        clear_client_caches()
    assert calls == []


def test_every_template_route_is_described_and_nothing_else(document: dict[str, Any]) -> None:
    routes = {(route.method.lower(), route.path) for route in Template().api_routes}
    assert set(_operations(document)) == routes
    assert routes >= DOCS_ROUTES


def test_every_route_but_the_docs_needs_the_api_key(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "x-api-key"}
    for (method, path), operation in _operations(document).items():
        if (method, path) in DOCS_ROUTES:
            assert operation["security"] == [], path
            assert not {"401", "403"} & set(operation["responses"]), path
            continue
        assert operation["security"] == [{SECURITY_SCHEME: []}], path
        for status in GATEWAY_STATUSES:
            response = operation["responses"][str(status)]
            assert _schema_ref(response) == "ErrorResponse", (path, status)


def test_every_error_answer_is_an_error_response_with_its_documented_meaning(document: dict[str, Any]) -> None:
    for (_, path), operation in _operations(document).items():
        assert "422" not in operation["responses"], path  # Powertools' own; ours is 400
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert _schema_ref(response) == "ErrorResponse", (path, status)
                assert response["description"] in (ERROR_STATUSES[int(status)], GATEWAY_ONLY.get(int(status))), path
    error = document["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) == {"error", "message"} and "errors" in error["properties"]
    assert set(document["components"]["schemas"]["FieldProblem"]["required"]) == {"field", "problem"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize("spec", list(PROCESSES.values()), ids=lambda spec: spec.process.value)
def test_the_start_operations(document: dict[str, Any], spec: Any) -> None:
    operation = document["paths"][spec.start_path]["post"]
    responses = operation["responses"]
    assert _schema_ref(responses["202"]) == "StartResponse"
    assert ("200" in responses) == (spec.wait_seconds > 0)  # only the sync waits for its run
    if spec.wait_seconds > 0:
        assert _schema_ref(responses["200"]) == "StartResponse" and "502" in responses
    assert {"400", "401", "403", "404", "409", "413", "429", "503", "504"} <= set(responses)
    assert "confirmation_required" in responses["409"]["description"]
    assert _schema_ref(operation["requestBody"]) == "StartRequest"
    assert operation["operationId"] == f"start{spec.process.value.title()}"


def test_the_start_body_takes_either_spelling_of_each_date(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["StartRequest"]
    assert body["required"] == ["client_id"]
    assert {"start_date", "start_date_str", "end_date", "end_date_str", "force", "confirm_calls"} <= set(
        body["properties"])
    assert body["allOf"] == [{"anyOf": [{"required": ["start_date"]}, {"required": ["start_date_str"]}]},
                             {"anyOf": [{"required": ["end_date"]}, {"required": ["end_date_str"]}]}]
    assert body["properties"]["start_date_str"]["format"] == "date"


@pytest.mark.parametrize("path", [p.spec.status_path for p in (*PIPELINE_STEPS, Process.PIPELINE)] + [REPORT_PATH])
def test_the_status_and_report_operations_document_their_query(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert all(p["in"] == "query" for p in parameters.values())
    expected = {"client_id", "start_date", "end_date", "start_date_str", "end_date_str"}
    assert set(parameters) == (expected | {"format"} if path == REPORT_PATH else expected)
    client_id = parameters["client_id"]
    assert client_id["required"] is True and client_id["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    for name in expected - {"client_id"}:
        assert parameters[name]["required"] is False
        assert parameters[name]["schema"] == {**parameters[name]["schema"], "type": "string", "format": "date"}
        assert "anyOf" not in parameters[name]["schema"]  # a query value is never null
    assert "start_date_str" in parameters["start_date"]["description"]
    ok = operation["responses"]["200"]
    if path == REPORT_PATH:
        assert parameters["format"]["schema"]["enum"] == ["json", "md"]
        assert _schema_ref(ok) == "Report" and ok["content"]["text/markdown"]["schema"] == {"type": "string"}
    else:
        assert _schema_ref(ok) in {"StatusResponse", "PipelineStatusResponse"}
    assert {"400", "401", "403", "404"} <= set(operation["responses"])


def test_a_status_a_handler_never_gives_is_described_as_api_gateways_own(document: dict[str, Any]) -> None:
    """A status route's 429 is only the usage plan's throttle (not too_many_starts); a docs route's 502 is only API
    Gateway's (not the sync's run_failed); the handlers' own answers keep ERROR_STATUSES' meaning."""
    operations = _operations(document)
    for key in {("get", spec.status_path) for spec in PROCESSES.values()} | {("get", REPORT_PATH)} | DOCS_ROUTES:
        assert operations[key]["responses"]["429"]["description"] == GATEWAY_ONLY[429], key
    for key in DOCS_ROUTES | {("get", REPORT_PATH), ("post", Process.TRANSCRIBE.spec.start_path)}:
        assert operations[key]["responses"]["502"]["description"] == GATEWAY_ONLY[502], key
    start = operations["post", Process.TRANSCRIBE.spec.start_path]["responses"]
    assert "too_many_starts" in start["429"]["description"]
    for key, operation in operations.items():  # too_many_starts and API Gateway's throttle both say when to retry
        assert operation["responses"]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer", key
    assert "run_failed" in operations["post", Process.SYNC.spec.start_path]["responses"]["502"]["description"]


def test_the_docs_operations(document: dict[str, Any]) -> None:
    description = document["paths"][OPENAPI_PATH]["get"]["responses"]["200"]["content"]
    page = document["paths"][DOCS_PATH]["get"]["responses"]["200"]["content"]
    assert "application/json" in description and "text/html" in page
