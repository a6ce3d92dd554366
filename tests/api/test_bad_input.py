"""Bad input over HTTP: always a 4xx JSON answer naming the field and the problem, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from callsight.processes import Process
from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, SYNC_STATUS

GOOD = {"client_id": "demo", "start_date": "2026-11-01", "end_date": "2026-11-02"}


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"start_date": "2026-11-01", "end_date": "2026-11-02"}, 400, "client_id", "required"),
        ({**GOOD, "client_id": ""}, 400, "client_id", "at least 1"),
        ({**GOOD, "client_id": "   "}, 400, "client_id", "at least 1"),
        ({**GOOD, "start_date": "2026-11-31"}, 400, "start_date", "not a real calendar date"),
        ({**GOOD, "start_date": "yesterday"}, 400, "start_date", "YYYY-MM-DD"),
        ({"client_id": "demo", "start_date_str": "2026/11/01", "end_date_str": "2026-11-02"}, 400,
         "start_date_str", "YYYY-MM-DD"),
        ({**GOOD, "end_date": "2026-10-01"}, 400, "end_date", "before start_date"),
        ({**GOOD, "start_date": "2024-01-01"}, 400, "end_date", "at most 366"),
        ({**GOOD, "client_id": "no-such-clinic"}, 404, "client_id", "unknown client"),
    ],
)
def test_bad_start_bodies(api: httpx.Client, body: dict[str, str], status: int, field: str, words: str) -> None:
    answer = api.post(SYNC, json=body)
    assert answer.status_code == status, answer.text
    problems = answer.json()["errors"]
    assert any(p["field"] == field and words in p["problem"] for p in problems), problems


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'"text"', b"{"])
def test_a_body_that_is_not_a_json_object(api: httpx.Client, raw: bytes) -> None:
    answer = api.post(SYNC, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["field"] == "body"


def test_an_oversized_body(api: httpx.Client) -> None:
    answer = api.post(SYNC, json={**GOOD, "padding": "x" * 100_000})
    assert answer.status_code == 413 and answer.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({}, 400, "client_id"),
        ({"client_id": "demo", "start_date": "2026-11-01"}, 400, "end_date"),
        ({"client_id": "demo", "start_date": "2026-13-01", "end_date": "2026-11-02"}, 400, "start_date"),
        ({"client_id": "demo", "start_date": "2026-11-05", "end_date": "2026-11-01"}, 400, "end_date"),
        ({"client_id": "nobody", "start_date": "2026-11-01", "end_date": "2026-11-02"}, 404, "client_id"),
    ],
)
def test_bad_status_queries(api: httpx.Client, query: dict[str, str], status: int, field: str) -> None:
    answer = api.get(SYNC_STATUS, params=query)
    assert answer.status_code == status, answer.text
    assert field in {p["field"] for p in answer.json()["errors"]}


def test_wrong_method_and_unknown_path_are_json_4xx(api: httpx.Client) -> None:
    assert api.get(SYNC).status_code in (403, 404, 405)
    unknown = api.post("/api/nothing-here", json=GOOD)
    assert unknown.status_code in (403, 404) and unknown.headers["content-type"].startswith("application/json")


def test_a_json_body_sent_without_a_json_content_type_is_read(api: httpx.Client) -> None:
    answer = api.post(SYNC, content=b'{"client_id": "no-such-clinic", "start_date": "2026-11-01", '
                      b'"end_date": "2026-11-02"}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 404 and answer.json()["error"] == "client_not_found"


def test_the_frontend_may_read_every_answer_cross_origin(api: httpx.Client, platform: LocalPlatform) -> None:
    """The template's Cors answers the preflight; each answer (errors too) carries the handler's own header, naming
    the frontend's origin (the AllowedOrigin setting; never ``*``)."""
    origin = {"Origin": platform.allowed_origin}
    preflight = api.options(SYNC, headers={**origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type,x-api-key"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == platform.allowed_origin != "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert set(preflight.headers["Access-Control-Allow-Headers"].lower().split(",")) == {"content-type", "x-api-key"}
    for expected, answer in ((200, api.get(SYNC_STATUS, params=GOOD, headers=origin)),
                             (400, api.post(SYNC, json={**GOOD, "end_date": "2026-10-01"}, headers=origin)),
                             (404, api.get(SYNC_STATUS, params={**GOOD, "client_id": "no-such-clinic"},
                                           headers=origin))):
        assert answer.status_code == expected, answer.text
        assert answer.headers.get("Access-Control-Allow-Origin") == platform.allowed_origin, answer.headers


@pytest.mark.parametrize("process", list(Process), ids=str)
def test_every_process_start_and_status_names_the_bad_field(api: httpx.Client, process: Process) -> None:
    """The same 4xx for bad input on every route of the process table, the new ones included."""
    start = api.post(process.spec.start_path, json={**GOOD, "start_date": "2026-13-01"})
    assert start.status_code == 400 and start.json()["errors"][0]["field"] == "start_date", start.text
    status = api.get(process.spec.status_path, params={**GOOD, "end_date": "2026-10-01"})
    assert status.status_code == 400 and status.json()["errors"][0]["field"] == "end_date", status.text
    unknown = api.get(process.spec.status_path, params={**GOOD, "client_id": "no-such-clinic"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "client_not_found"


@pytest.mark.parametrize("process", list(Process), ids=str)
@pytest.mark.parametrize(("day", "field"), [("9999-12-31", "start_date"), ("1969-12-31", "start_date"),
                                            ("9999-12-30", "end_date")])
def test_days_beyond_what_a_range_can_hold_are_400_on_every_process(api: httpx.Client, process: Process,
                                                                    day: str, field: str) -> None:
    """9999-12-31 once reached a 502 (OverflowError turning the range into instants) or was accepted."""
    days = {"start_date": day, "end_date": day} if field == "start_date" else {"start_date": "9999-12-29",
                                                                                "end_date": day}
    start = api.post(process.spec.start_path, json={"client_id": "demo", **days})
    status = api.get(process.spec.status_path, params={"client_id": "demo", **days})
    for answer in (start, status):
        assert answer.status_code == 400, answer.text
        problems = {p["field"]: p["problem"] for p in answer.json()["errors"]}
        assert field in problems and "9998-12-31" in problems[field], problems


@pytest.mark.parametrize("process", [Process.SYNC, Process.TRANSCRIBE, Process.PIPELINE], ids=str)
@pytest.mark.parametrize(("raw", "words"), [
    (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
    (b'{"client_id": "demo", "start_date": "2026-11-01", "end_date": "2026-11-02", "x": '
     + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"client_id": "d\xffmo", "start_date": "2026-11-01", "end_date": "2026-11-02"}', "not UTF-8"),
    (b"\xff\xfe{\x00}\x00", "not UTF-8"),
])
def test_a_body_the_parser_cannot_read_is_400_naming_the_body(api: httpx.Client, process: Process, raw: bytes,
                                                               words: str) -> None:
    answer = api.post(process.spec.start_path, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    (problem,) = answer.json()["errors"]
    assert problem["field"] == "body" and words in problem["problem"], problem
