"""Duplicate and racing task deliveries (Step Functions retries, at-least-once invokes) keep counters exact."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import httpx

from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, SYNC_STATUS, TRANSCRIBE_STATUS, assert_invariant


def _invoke(platform: LocalPlatform, function: str, payload: dict[str, Any]) -> dict[str, Any]:
    answer = platform.boto3_client("lambda").invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return dict(body)


def _running(platform: LocalPlatform, client_id: str, process: str, month: dict[str, str], run_id: str) -> None:
    """The range's run recorded running under ``run_id``, as a start would: the workers' claims check it."""
    days = DateRange(date.fromisoformat(month["start_date"]), date.fromisoformat(month["end_date"]))
    RunRepository(Table(platform.table_name)).started(client_id, process, days, execution_name=run_id,
                                                      execution_arn=f"invoked-by-hand:{run_id}")


def test_racing_duplicate_deliveries_count_each_call_once(api: httpx.Client, platform: LocalPlatform,
                                                          new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    calls = len(platform.amocrm.served_calls())  # distinct calls: one filed on two entities is one
    run = {"client_id": client_id, "process": "sync", **month, "force": False, "run_id": "race-run"}
    # the same planning task delivered twice: the second stores nothing new
    plan = _invoke(platform, "SyncCallsFunction", run)
    replan = _invoke(platform, "SyncCallsFunction", run)
    assert plan["fetched"]["new_calls"] == calls and replan["fetched"]["new_calls"] == 0
    assert replan["fetched"]["to_download"] == plan["fetched"]["to_download"]

    polls: list[dict[str, Any]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append(api.get(SYNC_STATUS, params={"client_id": client_id, **month}).json())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        _running(platform, client_id, "sync", month, "race-run")
        deliveries = [{"client_id": client_id, "process": "sync", "run_id": "race-run", "chunk_key": key, **month}
                      for key in plan["chunks"] for _ in range(3)]  # every chunk delivered three times at once
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda d: _invoke(platform, "DownloadRecordingsFunction", d), deliveries))
    finally:
        stop.set()
        poller.join()

    status = api.get(SYNC_STATUS, params={"client_id": client_id, **month}).json()
    assert status["total_calls"] == calls
    assert status["status_breakdown"] == {"pending": 0, "processing": 0, "success": calls, "failed": 0}
    assert sum(r["failed"] for r in results) == 0
    assert len(polls) > 3
    for seen in polls:
        assert_invariant(seen)
        assert seen["total_calls"] == calls


def test_racing_duplicate_transcriptions_count_each_call_once(api: httpx.Client, platform: LocalPlatform,
                                                              new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    run = {"client_id": client_id, "process": "transcribe", **month, "force": False, "run_id": "race-transcribe"}
    plan = _invoke(platform, "PlanCallsFunction", run)
    assert _invoke(platform, "PlanCallsFunction", run)["planned"]["new"] == 0  # a duplicate plan adds nothing
    planned = plan["planned"]["planned"]
    _running(platform, client_id, "transcribe", month, "race-transcribe")
    deliveries = [{"client_id": client_id, "process": "transcribe", "run_id": "race-transcribe", "chunk_key": key,
                   **month} for key in plan["chunks"] for _ in range(3)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda d: _invoke(platform, "TranscribeCallsFunction", d), deliveries))
    status = api.get(TRANSCRIBE_STATUS, params={"client_id": client_id, **month}).json()
    assert status["status_breakdown"] == {"pending": 0, "processing": 0, "success": planned, "failed": 0}
    assert status["total_calls"] == planned and sum(r["failed"] for r in results) == 0
