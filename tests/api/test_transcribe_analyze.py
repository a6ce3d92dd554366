"""Transcription and analysis over HTTP on the real ASL: per-call fan-out, exact counters, retries by rerun."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from callsight.analysis.models import CallAnalysis
from infra.platform import LocalPlatform
from tests.api.conftest import (
    ANALYZE,
    ANALYZE_STATUS,
    SYNC,
    TRANSCRIBE,
    TRANSCRIBE_STATUS,
    assert_invariant,
    wait_finished,
)


def _calls(platform: LocalPlatform, client_id: str) -> list[dict[str, Any]]:
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    return list(table.query(KeyConditionExpression="pk = :pk",
                            ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})["Items"])


def _run(api: httpx.Client, start: str, status: str, body: dict[str, Any], polls: list[dict[str, Any]]
         ) -> dict[str, Any]:
    answer = api.post(start, json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status_url"].startswith(status)
    days = {"start_date": body.get("start_date") or body["start_date_str"],
            "end_date": body.get("end_date") or body["end_date_str"]}
    return wait_finished(api, body["client_id"], days, status_path=status, timeout=240, on_poll=polls.append)


def _ended_execution(platform: LocalPlatform, name: str) -> dict[str, Any]:
    arn = platform.execution_arn("transcribe", name)
    sfn = platform.boto3_client("stepfunctions")
    for _ in range(100):
        execution: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.1)
    raise AssertionError(f"execution {name} still running 10 s after its run finished")


def test_sync_transcribe_analyze_end_to_end(api: httpx.Client, platform: LocalPlatform, new_client: Any,
                                            month: dict[str, str]) -> None:
    client_id = new_client()
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    recorded = [c for c in _calls(platform, client_id) if c.get("recording_key")]
    polls: list[dict[str, Any]] = []

    transcribed = _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, {"client_id": client_id, **month}, polls)
    assert transcribed["overall_status"] == "completed" and transcribed["total_calls"] == len(recorded)
    assert transcribed["progress_percentage"] == 100.0 and transcribed["execution_name"].startswith(
        f"{client_id}-transcribe-")
    analysed = _run(api, ANALYZE, ANALYZE_STATUS, {"client_id": client_id, "start_date_str": month["start_date"],
                                                   "end_date_str": month["end_date"]}, polls)
    assert analysed["overall_status"] == "completed" and analysed["total_calls"] == len(recorded)
    for seen in polls:
        assert_invariant(seen)

    s3 = platform.boto3_client("s3")
    by_note = {c.note_id: c for c in platform.amocrm.calls}
    agree = booking_calls = parts = 0
    for call in _calls(platform, client_id):
        if not call.get("recording_key"):
            assert "transcribe_status" not in call  # skipped calls never enter transcription
            continue
        transcript = json.loads(s3.get_object(Bucket=platform.env["CALLSIGHT_BUCKET"],
                                              Key=call["transcript_key"])["Body"].read())
        parts += transcript["parts"]  # a long recording is sent in parts: one request each
        assert transcript["text"] and {line["speaker"] for line in transcript["lines"]} <= {"administrator",
                                                                                          "patient"}
        analysis = CallAnalysis.model_validate(json.loads(json.dumps(call["analysis"], default=int)))
        scenario = by_note[int(call["amo_note_id"])].scenario
        assert scenario is not None
        if scenario.call_type == "booking":
            booking_calls += 1
            agree += analysis.outcome.booked == scenario.booked
    assert booking_calls and agree == booking_calls  # a booked call is scored as booked, and only those

    # nothing is done twice: a rerun plans nothing; force redoes everything
    again = _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, {"client_id": client_id, **month}, polls)
    assert again["overall_status"] == "completed"
    execution = _ended_execution(platform, again["execution_name"])  # its last task wrote the status first
    assert json.loads(execution["output"])["status_breakdown"]["success"] == len(recorded)
    requests_before = platform.openai.stats()["transcriptions"]
    assert requests_before >= len(recorded)
    _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, {"client_id": client_id, **month}, polls)
    assert platform.openai.stats()["transcriptions"] == requests_before
    _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, {"client_id": client_id, **month, "force": True}, polls)
    assert platform.openai.stats()["transcriptions"] == requests_before + parts


def test_under_faults_every_call_ends_with_a_reason_and_a_rerun_retries_the_failures(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    platform.openai.configure(fault_rate=0.2)
    polls: list[dict[str, Any]] = []
    body = {"client_id": client_id, **month}
    first = _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, body, polls)
    analysed = _run(api, ANALYZE, ANALYZE_STATUS, body, polls)
    for seen in polls:
        assert_invariant(seen)
    for status in (first, analysed):
        b = status["status_breakdown"]
        assert b["pending"] == b["processing"] == 0 and b["success"] + b["failed"] == status["total_calls"]
        assert status["progress_percentage"] == 100.0
        assert status["overall_status"] == ("partial" if b["failed"] else "completed")
    for call in _calls(platform, client_id):
        for step in ("transcribe", "analyze"):
            if call.get(f"{step}_status") == "failed":
                assert call[f"{step}_error"], call  # every failure says why
            else:
                assert call.get(f"{step}_status") in (None, "success")

    # the operator's retry: the same start again processes only what failed (one request per call now)
    platform.openai.configure(fault_rate=0)
    before = platform.openai.stats()
    retried = _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, body, polls)
    assert retried["overall_status"] == "completed"
    assert retried["total_calls"] == first["total_calls"]
    transcribed_again = platform.openai.stats()["transcriptions"] - before["transcriptions"]
    assert transcribed_again == first["status_breakdown"]["failed"]
    reanalysed = _run(api, ANALYZE, ANALYZE_STATUS, body, polls)
    assert reanalysed["overall_status"] == "completed" and reanalysed["total_calls"] == first["total_calls"]
    # the failed analyses, and the calls whose transcript only the retry made
    analysed_again = platform.openai.stats()["completions"] - before["completions"]
    assert analysed_again == analysed["status_breakdown"]["failed"] + first["status_breakdown"]["failed"]


def test_a_service_that_keeps_failing_fails_each_call_with_its_reason(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    platform.openai.configure(fault_rate=1.0, fault_kinds=["500"])
    try:
        status = _run(api, TRANSCRIBE, TRANSCRIBE_STATUS, {"client_id": client_id, **month}, [])
    finally:
        platform.openai.configure(fault_rate=0, fault_kinds=["429", "500", "timeout", "invalid_json"])
    assert status["overall_status"] == "partial" and status["status_breakdown"]["success"] == 0
    failed = [c for c in _calls(platform, client_id) if c.get("transcribe_status") == "failed"]
    assert failed and all("HTTP 500" in c["transcribe_error"] for c in failed)
