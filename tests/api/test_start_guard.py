"""The clinic-level guard on starts over HTTP: 429 too_many_starts with Retry-After, 409 confirmation_required."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientRepository
from callsight.dal.table import Table
from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, TRANSCRIBE, TRANSCRIBE_STATUS, wait_finished


def _headers(platform: LocalPlatform) -> dict[str, str]:
    """A browser's request from the frontend (the ``api`` client sends the platform's API key)."""
    return {"Origin": platform.allowed_origin}


def test_a_start_over_the_clinic_hourly_limit_is_429_with_retry_after(
        api: httpx.Client, platform: LocalPlatform, new_client: Callable[..., str], month: dict[str, str]) -> None:
    client_id = new_client()
    clients = ClientRepository(Table(platform.table_name))
    clients.put(clients.get(client_id).model_copy(update={"starts_per_hour": 1}))  # the clinic's own limit
    body = {"client_id": client_id, **month}
    assert api.post(SYNC, json=body, headers=_headers(platform)).status_code in (200, 202)
    wait_finished(api, client_id, month)
    refused = api.post(TRANSCRIBE, json=body, headers=_headers(platform))
    assert refused.status_code == 429, refused.text
    answer = refused.json()
    assert answer["error"] == "too_many_starts"
    assert client_id in answer["message"] and "1 starts per hour" in answer["message"]
    (problem,) = answer["errors"]
    assert problem["field"] == "client_id" and "next start is allowed at" in problem["problem"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers.get("Access-Control-Allow-Origin") == platform.allowed_origin, refused.headers
    assert "retry-after" in refused.headers.get("Access-Control-Expose-Headers", "").lower()  # the browser reads it
    # the refused start took nothing: no run of the transcription, and the clinic is not held (429 again, no 409)
    status = api.get(TRANSCRIBE_STATUS, params=body, headers=_headers(platform)).json()
    assert status["overall_status"] == "pending" and status.get("execution_name") is None
    assert api.post(TRANSCRIBE, json=body, headers=_headers(platform)).status_code == 429


def test_a_force_over_the_threshold_needs_confirm_calls(
        api: httpx.Client, platform: LocalPlatform, new_client: Callable[..., str], month: dict[str, str]) -> None:
    client_id = new_client()
    threshold = int(platform.template.parameters["ForceConfirmCalls"])
    calls = threshold + 1  # transcribed calls of the range (seeded; none has a recording, so a rerun plans none)
    CallRepository(Table(platform.table_name), client_id).insert_many("transcribe", [
        {"call_id": f"seeded-{i}", "day": month["start_date"], "transcribe_status": "success"} for i in range(calls)])
    body = {"client_id": client_id, **month, "force": True}
    refused = api.post(TRANSCRIBE, json=body, headers=_headers(platform))
    assert refused.status_code == 409, refused.text
    answer = refused.json()
    assert answer["error"] == "confirmation_required"
    days = f"{month['start_date']}..{month['end_date']}"
    assert answer["message"] == (f"force re-runs {calls} calls of {client_id} {days} (more than {threshold}): "
                                 f"send confirm_calls: {calls} to go ahead")
    assert [p["field"] for p in answer["errors"]] == ["confirm_calls"]
    assert refused.headers.get("Access-Control-Allow-Origin") == platform.allowed_origin, refused.headers
    too_few = api.post(TRANSCRIBE, json={**body, "confirm_calls": calls - 1}, headers=_headers(platform))
    assert too_few.status_code == 409 and str(calls - 1) in too_few.json()["errors"][0]["problem"]
    negative = api.post(TRANSCRIBE, json={**body, "confirm_calls": -1}, headers=_headers(platform))
    assert negative.status_code == 400 and negative.json()["errors"][0]["field"] == "confirm_calls"
    accepted = api.post(TRANSCRIBE, json={**body, "confirm_calls": calls}, headers=_headers(platform))
    assert accepted.status_code == 202, accepted.text
    status = wait_finished(api, client_id, month, status_path=TRANSCRIBE_STATUS)
    assert status["overall_status"] == "completed" and status["total_calls"] == calls
