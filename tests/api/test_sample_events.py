"""The sample events in events/ (for `sam local invoke -e`) are accepted by the handlers they are for."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from infra.platform import LocalPlatform

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _invoke(platform: LocalPlatform, function: str, event_file: str) -> dict[str, Any]:
    # the samples' week moved to last week: the stub's demo calls are always the last 30 days
    text = (EVENTS / event_file).read_text(encoding="utf-8")
    week_start = date.today() - timedelta(days=8)
    text = text.replace("2026-11-01", week_start.isoformat()).replace(
        "2026-11-07", (week_start + timedelta(days=6)).isoformat())
    answer = platform.boto3_client("lambda").invoke(FunctionName=function, Payload=text.encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return dict(body)


def test_every_sample_event_runs_on_its_handler(platform: LocalPlatform) -> None:
    status = _invoke(platform, "ProcessStatusFunction", "sync_status.json")
    assert status["statusCode"] == 200 and "overall_status" in json.loads(status["body"])
    plan = _invoke(platform, "SyncCallsFunction", "sync_calls.json")
    assert plan["chunks"] and plan["chunks"][0].endswith("download-00000.json")
    downloaded = _invoke(platform, "DownloadRecordingsFunction", "download_recordings.json")
    assert downloaded["failed"] == 0 and downloaded["downloaded"] + downloaded["not_pending"] > 0
    finished = _invoke(platform, "FinishRunFunction", "finish_run.json")
    assert finished["execution_name"] == "sample-run"
    aborted = _invoke(platform, "FinishRunFunction", "finish_run_aborted.json")
    assert aborted["execution_name"] == "sample-aborted" and aborted["interrupted"] == 0
    started = _invoke(platform, "StartProcessFunction", "sync_start.json")
    assert started["statusCode"] in (200, 202, 409), started
