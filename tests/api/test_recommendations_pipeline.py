"""Processes 4 and 5 and the pipeline over HTTP on the real ASL: the report, PostgreSQL, all five in one run."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from contextlib import redirect_stdout
from typing import Any

import httpx
import psycopg
import pytest

from callsight import admin
from callsight.processes import PIPELINE_STEPS, REPORT_PATH
from infra.platform import DATABASE_SECRET_ID, LocalPlatform
from tests.api.conftest import (
    ANALYZE,
    ANALYZE_STATUS,
    PIPELINE,
    PIPELINE_STATUS,
    RECOMMENDATIONS,
    RECOMMENDATIONS_STATUS,
    SYNC,
    TRANSCRIBE,
    assert_invariant,
    wait_finished,
)

BI_TABLES = ("calls", "transcript_lines", "analyses", "criterion_scores", "recommendations")


def _calls(platform: LocalPlatform, client_id: str) -> list[dict[str, Any]]:
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"CALLS#{client_id}"},
                        ConsistentRead=True)["Items"]
    return [json.loads(json.dumps(item, default=float)) for item in items]


def _wait_pipeline(api: httpx.Client, client_id: str, days: dict[str, str], polls: list[dict[str, Any]],
                   timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(PIPELINE_STATUS, params={"client_id": client_id, **days}).json()
        polls.append(status)
        if status["overall_status"] in ("completed", "partial", "failed"):
            return dict(status)
        time.sleep(0.3)
    raise AssertionError(f"the pipeline did not finish in {timeout} s")


def _bi_rows(platform: LocalPlatform, client_id: str) -> dict[str, list[tuple[Any, ...]]]:
    assert platform.database_url
    with psycopg.connect(platform.database_url) as connection:
        return {table: connection.execute(f"SELECT * FROM {table} WHERE client_id = %s ORDER BY 1, 2, 3",
                                          (client_id,)).fetchall() for table in (*BI_TABLES, "reports")}


def _analysed_from_scratch(api: httpx.Client, client_id: str, month: dict[str, str]) -> None:
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    for path in (TRANSCRIBE, ANALYZE):
        answer = api.post(path, json={"client_id": client_id, **month})
        assert answer.status_code == 202, answer.text
        status_path = answer.json()["status_url"].split("?")[0]
        assert wait_finished(api, client_id, month, status_path=status_path, timeout=240)["overall_status"] == \
            "completed"


def test_pipeline_runs_all_five_processes_and_the_report_counts_the_stored_analyses(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    answer = api.post(PIPELINE, json={"client_id": client_id, "start_date_str": month["start_date"],
                                      "end_date_str": month["end_date"]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status_url"].startswith(PIPELINE_STATUS)
    # while it runs, any other start of the clinic is refused naming the pipeline
    busy = api.post(ANALYZE, json={"client_id": client_id, **month})
    assert busy.status_code == 409 and "pipeline" in busy.json()["message"], busy.text
    polls: list[dict[str, Any]] = []
    final = _wait_pipeline(api, client_id, month, polls)
    assert final["overall_status"] == "completed", final
    assert final["progress_percentage"] == 100.0 and final["current_step"] is None
    seen_steps = [p["current_step"] for p in polls if p["current_step"]]
    assert seen_steps == sorted(seen_steps, key=[s.value for s in PIPELINE_STEPS].index)  # in order, never back
    for poll in polls:
        for step in poll["steps"].values():
            assert_invariant(step)
    # each step was a process run of its own, its status endpoint answering the same
    for process in PIPELINE_STEPS:
        step = final["steps"][process.value]
        assert step["overall_status"] == "completed" and step["execution_name"].startswith(f"{client_id}-{process}-")
        alone = api.get(process.spec.status_path, params={"client_id": client_id, **month}).json()
        assert alone["execution_name"] == step["execution_name"]
        execution = platform.boto3_client("stepfunctions").describe_execution(
            executionArn=platform.execution_arn(process.value, step["execution_name"]))
        assert execution["status"] == "SUCCEEDED"

    calls = _calls(platform, client_id)
    analysed = [c for c in calls if c.get("analyze_status") == "success"]
    recommendations = final["steps"]["recommendations"]
    assert recommendations["total_calls"] == len(analysed) > 0
    assert recommendations["status_breakdown"]["success"] == len(analysed)
    assert recommendations["postgres_sync"]["status"] == "completed"

    report = api.get(REPORT_PATH, params={"client_id": client_id, **month}).json()
    assert report["total_calls"] == len(calls) and report["analysed_calls"] == len(analysed)
    with_advice = {c["call_id"] for c in analysed if c["analysis"]["recommendations"]}
    assert report["calls_with_recommendations"] == report["folded_calls"] == len(with_advice)
    by_admin = Counter(c.get("administrator") or "" for c in analysed)
    assert {a["administrator"]: a["analysed"] for a in report["administrators"] if a["analysed"]} == dict(by_admin)
    booked = Counter(c.get("administrator") or "" for c in analysed if c["analysis"]["outcome"]["booked"])
    assert {a["administrator"]: a["booked"] for a in report["administrators"] if a["booked"]} == dict(booked)
    assert {t["call_type"]: t["calls"] for t in report["call_types"]} == dict(
        Counter(c["analysis"]["call_type"] for c in analysed))
    assert report["problems"] and sum(p["calls"] for p in report["problems"]) >= len(with_advice)
    for problem in report["problems"]:
        assert problem["share"] == pytest.approx(problem["calls"] / len(analysed), abs=1e-3)
        assert 1 <= len(problem["examples"]) <= 3
        assert {e["call_id"] for e in problem["examples"]} <= with_advice
    assert [p["calls"] for p in report["problems"]] == sorted((p["calls"] for p in report["problems"]), reverse=True)
    markdown = api.get(REPORT_PATH, params={"client_id": client_id, **month, "format": "md"})
    assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
    assert "Частые проблемы" in markdown.text and report["problems"][0]["title"] in markdown.text

    rows = _bi_rows(platform, client_id)
    assert len(rows["calls"]) == len(calls) and len(rows["analyses"]) == len(analysed)
    assert len(rows["criterion_scores"]) == sum(len(c["analysis"]["criteria"]) for c in analysed)
    assert len(rows["recommendations"]) == sum(len(c["analysis"]["recommendations"]) for c in analysed)
    assert rows["transcript_lines"] and len(rows["reports"]) == 1

    # the same range again: identical rows in PostgreSQL, the same counts in the report
    again = api.post(RECOMMENDATIONS, json={"client_id": client_id, **month})
    assert again.status_code == 202, again.text
    rerun = wait_finished(api, client_id, month, status_path=RECOMMENDATIONS_STATUS, timeout=240)
    assert rerun["overall_status"] == "completed" and rerun["total_calls"] == len(analysed)
    again_rows = _bi_rows(platform, client_id)
    assert {t: r for t, r in again_rows.items() if t != "reports"} == {t: r for t, r in rows.items() if t != "reports"}
    report_again = api.get(REPORT_PATH, params={"client_id": client_id, **month}).json()
    assert [(p["title"], p["calls"]) for p in report_again["problems"]] == \
        [(p["title"], p["calls"]) for p in report["problems"]]


def test_a_pipeline_whose_analysis_fails_stops_there_with_the_error_shown(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    assert platform.dispatcher is not None
    # inside its containers, planning the analysis crashes for this clinic (as a bug would), for every delivery; a
    # worker's crash would only fail its chunk's calls (tests/api/test_chunk_death.py)
    with platform.dispatcher.faults_injected("PlanCallsFunction", "crash_for_client", client_id=client_id,
                                             process="analyze", message="injected crash: planning the analysis died"):
        assert api.post(PIPELINE, json={"client_id": client_id, **month}).status_code == 202
        final = _wait_pipeline(api, client_id, month, [])
    assert final["overall_status"] == "failed"
    assert "call analysis step failed" in final["error"] and "injected crash" in final["error"], final["error"]
    steps = final["steps"]
    assert steps["sync"]["overall_status"] == "completed" and steps["transcribe"]["overall_status"] == "completed"
    assert steps["analyze"]["overall_status"] == "failed"
    assert steps["recommendations"]["overall_status"] == "pending" and steps["recommendations"]["total_calls"] == 0
    # the lock went with the pipeline: the operator's retry of the step starts at once and completes
    deadline = time.monotonic() + 20
    while (retry := api.post(ANALYZE, json={"client_id": client_id, **month})).status_code == 409:
        assert time.monotonic() < deadline, retry.text
        time.sleep(0.2)
    assert retry.status_code == 202
    analysed = wait_finished(api, client_id, month, status_path=ANALYZE_STATUS, timeout=240)
    assert analysed["overall_status"] == "completed"


def test_a_database_that_refuses_fails_the_run_naming_it_and_a_rerun_completes(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    _analysed_from_scratch(api, client_id, month)
    secrets = platform.boto3_client("secretsmanager")
    name = platform.template.secrets[DATABASE_SECRET_ID].name
    good = secrets.get_secret_value(SecretId=name)["SecretString"]
    password = "Sup3r-Secret-db-pw"
    secrets.put_secret_value(SecretId=name, SecretString=f"postgresql://bi:{password}@127.0.0.1:1/callsight_bi")
    assert platform.dispatcher is not None
    platform.dispatcher.recycle("SyncPostgresFunction")  # its containers cache the secret for 5 minutes
    try:
        assert api.post(RECOMMENDATIONS, json={"client_id": client_id, **month}).status_code == 202
        failed = wait_finished(api, client_id, month, status_path=RECOMMENDATIONS_STATUS, timeout=240)
    finally:
        secrets.put_secret_value(SecretId=name, SecretString=good)
        platform.dispatcher.recycle("SyncPostgresFunction")
    assert failed["overall_status"] == "failed"
    assert "127.0.0.1" in failed["error"] and "callsight_bi" in failed["error"], failed["error"]
    assert password not in json.dumps(failed) and failed["postgres_sync"]["status"] == "failed"
    report = api.get(REPORT_PATH, params={"client_id": client_id, **month})
    assert report.status_code == 200  # the report was built before the sync failed

    assert api.post(RECOMMENDATIONS, json={"client_id": client_id, **month}).status_code == 202
    done = wait_finished(api, client_id, month, status_path=RECOMMENDATIONS_STATUS, timeout=240)
    assert done["overall_status"] == "completed" and done["postgres_sync"]["status"] == "completed"
    rows = _bi_rows(platform, client_id)
    assert len(rows["calls"]) == len(_calls(platform, client_id))

    # process 5 alone, as an operator runs it: nothing to change, nothing changed
    printed = io.StringIO()
    with redirect_stdout(printed):
        code = admin.main(["sync-postgres", "--client-id", client_id, "--start-date", month["start_date"],
                           "--end-date", month["end_date"], "--database-url", str(platform.database_url)])
    assert code == 0
    summary = json.loads(printed.getvalue())
    assert sum(summary["upserted"].values()) == 0 and summary["rows"]["calls"] == len(rows["calls"])
    assert _bi_rows(platform, client_id) == rows


def test_report_answers_404_when_there_is_none_and_400_for_a_bad_format(
        api: httpx.Client, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    missing = api.get(REPORT_PATH, params={"client_id": client_id, **month})
    assert missing.status_code == 404 and missing.json()["error"] == "report_not_found"
    assert RECOMMENDATIONS in missing.json()["message"]
    bad = api.get(REPORT_PATH, params={"client_id": client_id, **month, "format": "xml"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "format"
    unknown = api.get(REPORT_PATH, params={"client_id": "no-such-clinic", **month})
    assert unknown.status_code == 404 and unknown.json()["error"] == "client_not_found"
    assert api.get(REPORT_PATH, params={"client_id": client_id}).status_code == 400


def test_a_theming_worker_that_dies_fails_only_its_chunks_calls_and_the_report_is_still_built(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    _analysed_from_scratch(api, client_id, month)
    assert platform.dispatcher is not None
    # the theming worker's container exits on the run's first chunk (as an out-of-memory or a crash would end it)
    with platform.dispatcher.faults_injected("ThemeCallsFunction", "exit_on_chunk", client_id=client_id,
                                             chunk_suffix="recommendations-00000.json"):
        assert api.post(RECOMMENDATIONS, json={"client_id": client_id, **month}).status_code == 202
        ended = wait_finished(api, client_id, month, status_path=RECOMMENDATIONS_STATUS, timeout=240)
    assert ended["overall_status"] == "partial", ended
    assert_invariant(ended)
    reported = [call for call in _calls(platform, client_id) if call.get("recommendations_status")]
    failed = [call for call in reported if call["recommendations_status"] == "failed"]
    assert failed and ended["status_breakdown"]["failed"] == len(failed)
    assert all("Runtime.ExitError" in call["recommendations_error"] for call in failed)
    assert ended["postgres_sync"]["status"] == "completed"  # the run went on: the report, then process 5
    assert api.get(REPORT_PATH, params={"client_id": client_id, **month}).status_code == 200
