"""The sample events in events/ (for `sam local invoke -e`) are accepted by the handlers they are for."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from infra.platform import LocalPlatform
from tests.api.conftest import (
    ANALYZE_STATUS,
    PIPELINE_STATUS,
    RECOMMENDATIONS_STATUS,
    SYNC_STATUS,
    TRANSCRIBE_STATUS,
    wait_finished,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _week() -> DateRange:
    start = date.today() - timedelta(days=8)
    return DateRange(start, start + timedelta(days=6))


def _invoke(platform: LocalPlatform, function: str, event_file: str, **changes: str) -> dict[str, Any]:
    # the samples' week moved to last week: the stub's demo calls are always the last 30 days
    text = (EVENTS / event_file).read_text(encoding="utf-8")
    week = _week()
    text = text.replace("2026-11-01", week.start.isoformat()).replace("2026-11-07", week.end.isoformat())
    if changes:
        text = json.dumps({**json.loads(text), **changes})
    answer = platform.boto3_client("lambda").invoke(FunctionName=function, Payload=text.encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return dict(body)


def test_every_sample_event_runs_on_its_handler(platform: LocalPlatform, api: httpx.Client) -> None:
    runs = RunRepository(Table(platform.table_name))
    for process in ("sync", "transcribe", "analyze", "recommendations"):  # the samples' run, as a start records it
        runs.started("demo", process, _week(), execution_name="sample-run", execution_arn="invoked-by-hand")
    status = _invoke(platform, "ProcessStatusFunction", "sync_status.json")
    assert status["statusCode"] == 200 and "overall_status" in json.loads(status["body"])
    plan = _invoke(platform, "SyncCallsFunction", "sync_calls.json")
    assert plan["chunks"] and plan["chunks"][0].endswith("sync-00000.json")
    downloaded = _invoke(platform, "DownloadRecordingsFunction", "download_recordings.json")
    assert downloaded["failed"] == 0 and downloaded["downloaded"] + downloaded["not_pending"] > 0
    planned = _invoke(platform, "PlanCallsFunction", "plan_calls.json")
    assert planned["chunks"][0].endswith("transcribe-00000.json") and planned["planned"]["planned"] > 0
    transcribed = _invoke(platform, "TranscribeCallsFunction", "transcribe_calls.json")
    assert transcribed["failed"] == 0 and transcribed["succeeded"] > 0
    analysis_plan = _invoke(platform, "PlanCallsFunction", "plan_calls.json",
                            process="analyze")
    assert analysis_plan["chunks"][0].endswith("analyze-00000.json")
    analysed = _invoke(platform, "AnalyzeCallsFunction", "analyze_calls.json")
    assert analysed["failed"] == 0 and analysed["succeeded"] > 0
    report_plan = _invoke(platform, "PlanCallsFunction", "plan_calls.json", process="recommendations")
    assert report_plan["chunks"][0].endswith("recommendations-00000.json")
    themed = _invoke(platform, "ThemeCallsFunction", "theme_calls.json")
    assert themed["failed"] == 0 and themed["succeeded"] > 0
    built = _invoke(platform, "BuildReportFunction", "build_report.json")
    assert built["report_key"].endswith(".json") and built["problems"] > 0
    synced = _invoke(platform, "SyncPostgresFunction", "sync_postgres.json")
    assert synced["rows"]["calls"] > 0
    markdown = _invoke(platform, "GetReportFunction", "get_report.json")
    assert markdown["statusCode"] == 200 and "Частые проблемы" in markdown["body"]
    finished = _invoke(platform, "FinishRunFunction", "finish_run.json")
    assert finished["execution_name"] == "sample-run"
    aborted = _invoke(platform, "FinishRunFunction", "finish_run_aborted.json")
    assert aborted["execution_name"] == "sample-aborted" and aborted["interrupted"] == 0
    for path in ("transcribe_status.json", "analyze_status.json", "recommendations_status.json"):
        answer = _invoke(platform, "ProcessStatusFunction", path)
        assert answer["statusCode"] == 200 and json.loads(answer["body"])["total_calls"] > 0
    for path, status_path in (("sync_start.json", SYNC_STATUS), ("transcribe_start.json", TRANSCRIBE_STATUS),
                              ("analyze_start.json", ANALYZE_STATUS),
                              ("recommendations_start.json", RECOMMENDATIONS_STATUS),
                              ("pipeline_start.json", PIPELINE_STATUS)):
        started = _invoke(platform, "StartProcessFunction", path)
        assert started["statusCode"] in (200, 202), started
        body = json.loads(started["body"])
        days = {"start_date": body["start_date"], "end_date": body["end_date"]}
        assert wait_finished(api, "demo", days, status_path=status_path)["overall_status"] == "completed"

    pipeline = _invoke(platform, "ProcessStatusFunction", "pipeline_status.json")
    assert pipeline["statusCode"] == 200 and json.loads(pipeline["body"])["overall_status"] == "completed"


def test_the_begin_step_sample_is_refused_without_its_pipeline_run(platform: LocalPlatform) -> None:
    """A step is begun only for the range's current pipeline execution (the sample names none that runs)."""
    text = (EVENTS / "begin_step.json").read_text(encoding="utf-8")
    answer = platform.boto3_client("lambda").invoke(FunctionName="BeginStepFunction", Payload=text.encode())
    assert answer.get("FunctionError") and "sample-pipeline" in json.loads(answer["Payload"].read())["errorMessage"]
