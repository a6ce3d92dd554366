"""The sync over HTTP, as the frontend uses it: start, poll, the status JSON, a re-sync."""

from __future__ import annotations

from typing import Any

import httpx

from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, SYNC_STATUS, assert_invariant, wait_finished

GUIDE_KEYS = {"overall_status", "total_calls", "status_breakdown", "progress_percentage"}


def test_sync_of_the_demo_clinic_end_to_end(api: httpx.Client, platform: LocalPlatform,
                                            month: dict[str, str]) -> None:
    calls = len(platform.amocrm.served_calls())  # distinct calls: one filed on two entities is one
    answer = api.post(SYNC, json={"client_id": "demo", "start_date_str": month["start_date"],
                                  "end_date_str": month["end_date"]})
    assert answer.status_code in (200, 202), answer.text
    started = answer.json()
    assert started["execution_name"].startswith("demo-sync-")
    assert started["status_url"].startswith(SYNC_STATUS + "?client_id=demo")
    polls: list[dict[str, Any]] = []
    status = wait_finished(api, "demo", month, on_poll=polls.append)
    for seen in polls:
        assert set(seen) >= GUIDE_KEYS and set(seen["status_breakdown"]) == {"pending", "processing", "success",
                                                                              "failed"}
        assert_invariant(seen)
    assert status["overall_status"] == "completed" and status["total_calls"] == calls
    assert status["progress_percentage"] == 100.0 and status["status_breakdown"]["success"] == calls
    merged = sum(len(c.copies) for c in platform.amocrm.served_calls())
    assert merged > 0 and status["notes"]["duplicates_merged"] == merged
    assert status["notes"]["notes_scanned"] == platform.amocrm.note_count
    assert status["rejected"] == {} and status["skipped_entities"] == {}
    assert status["execution_name"] == started["execution_name"] and status["finished_at"]
    stub_calls = platform.amocrm.calls
    expected_skips = sum(1 for c in stub_calls if not c.has_recording or c.duration < 10)
    assert sum(status["skipped"].values()) == expected_skips
    # the recordings are really in S3
    s3 = platform.boto3_client("s3")
    listed = s3.list_objects_v2(Bucket=platform.env["CALLSIGHT_BUCKET"], Prefix="recordings/demo/")
    assert listed.get("KeyCount", 0) == calls - expected_skips

    # the execution as an operator sees it in the console: succeeded, with the summary as output
    sfn = platform.boto3_client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=platform.state_machine_arn("sync"))["executions"]
    mine = next(e for e in executions if e["name"] == started["execution_name"])
    assert mine["status"] == "SUCCEEDED"

    # a re-sync of the same range: the same count, nothing downloaded again
    again = api.post(SYNC, json={"client_id": "demo", **month})
    assert again.status_code in (200, 202), again.text
    resynced = wait_finished(api, "demo", month)
    assert resynced["total_calls"] == calls and resynced["overall_status"] == "completed"
    assert resynced["execution_name"] == again.json()["execution_name"]
    if again.status_code == 200:
        assert again.json()["summary"]["total_calls"] == calls
    assert s3.list_objects_v2(Bucket=platform.env["CALLSIGHT_BUCKET"], Prefix="recordings/demo/")["KeyCount"] == \
        listed["KeyCount"]


def test_a_range_never_synced_is_pending_with_nothing(api: httpx.Client) -> None:
    status = api.get(SYNC_STATUS, params={"client_id": "demo", "start_date": "2020-01-01", "end_date": "2020-01-31"})
    assert status.status_code == 200
    body = status.json()
    assert body["overall_status"] == "pending" and body["total_calls"] == 0 and body["progress_percentage"] == 0


def test_a_sync_that_finishes_quickly_answers_200_with_its_summary(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    client_id = new_client()
    answer = api.post(SYNC, json={"client_id": client_id, **month})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "completed" and body["summary"]["total_calls"] == len(platform.amocrm.served_calls())
    assert body["summary"]["rejected"] == {} and body["summary"]["notes"]["duplicates_merged"] > 0
    assert body["summary"]["status_breakdown"]["failed"] == 0


def test_broken_recording_links_are_visible_per_call_and_the_run_is_partial(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str]) -> None:
    platform.amocrm.configure(broken_link_rate=0.3)
    client_id = new_client()
    api.post(SYNC, json={"client_id": client_id, **month})
    status = wait_finished(api, client_id, month)
    assert status["overall_status"] == "partial" and status["progress_percentage"] == 100.0
    failed = status["status_breakdown"]["failed"]
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk",
                        ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})["Items"]
    errors = [i["sync_error"] for i in items if i["sync_status"] == "failed"]
    assert len(errors) == failed > 0 and all("recording download failed: HTTP 40" in e for e in errors)
