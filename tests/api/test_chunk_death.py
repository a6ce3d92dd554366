"""A worker chunk that dies is only its own calls' fate: they end failed with the reason, the other chunks complete,
and the run ends partial (not failed), through the real ASL on the local platform.

How the chunk dies is a parameter (``DEATHS``): today its worker's container exits mid-way (``os._exit``: Lambda
answers ``Runtime.ExitError``), injected for one chunk by ``infra/faults.py``'s ``exit_on_chunk``. A timeout or an
out-of-memory variant (the platform's ``function_limits``, ``Sandbox.Timedout`` / ``Runtime.OutOfMemory``) plugs
in as another entry: how to make that chunk die, and the words its calls' reason must hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callsight.dal.recordings import plan_key
from infra.platform import LocalPlatform
from tests.api.conftest import SYNC, TRANSCRIBE, TRANSCRIBE_STATUS, assert_invariant, wait_finished

EVENTS = Path(__file__).resolve().parents[2] / "events"
WORKER = "TranscribeCallsFunction"
DYING_CHUNK = "transcribe-00001"


@dataclass(frozen=True)
class Death:
    """How one chunk's worker is made to die, and what its calls' reason says then."""

    kill: Callable[[LocalPlatform, str], AbstractContextManager[None]]  # (platform, client_id) -> within: it dies
    reason: str


def _exits_mid_way(platform: LocalPlatform, client_id: str) -> AbstractContextManager[None]:
    assert platform.dispatcher is not None
    return platform.dispatcher.faults_injected(WORKER, "exit_on_chunk", client_id=client_id,
                                               chunk_suffix=f"{DYING_CHUNK}.json", after_s=0.2)


DEATHS = {
    "exit": Death(kill=_exits_mid_way, reason="the worker's runtime exited (Runtime.ExitError: exit status 1); "
                                              "run the process again to retry this call"),
}


def _calls(platform: LocalPlatform, client_id: str) -> dict[str, dict[str, Any]]:
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})
    return {item["sk"]: item for item in items["Items"]}


def _chunk(platform: LocalPlatform, client_id: str, run_id: str, name: str) -> list[str]:
    s3 = platform.boto3_client("s3")
    body = s3.get_object(Bucket=platform.env["CALLSIGHT_BUCKET"], Key=plan_key(client_id, run_id, name))["Body"]
    return [entry["sk"] for entry in json.loads(body.read())]


@pytest.fixture
def slow_openai(platform: LocalPlatform) -> Iterator[None]:
    """Each transcription takes 0.4 s, so a worker dying 0.2 s into its chunk has finished none of its calls (some
    claimed, processing, some not started: both end failed; the unit tests show finished ones keep their status)."""
    platform.openai.configure(latency_ms=400)
    yield
    platform.openai.configure(latency_ms=0)


@pytest.mark.parametrize("death", list(DEATHS))
def test_a_dying_chunk_fails_only_its_own_calls_and_the_run_ends_partial(
        api: httpx.Client, platform: LocalPlatform, new_client: Any, month: dict[str, str], slow_openai: None,
        death: str) -> None:
    client_id = new_client()
    assert api.post(SYNC, json={"client_id": client_id, **month}).status_code == 200
    polls: list[dict[str, Any]] = []
    with DEATHS[death].kill(platform, client_id):
        assert api.post(TRANSCRIBE, json={"client_id": client_id, **month}).status_code == 202
        status = wait_finished(api, client_id, month, status_path=TRANSCRIBE_STATUS, timeout=300,
                               on_poll=polls.append)

    assert status["overall_status"] == "partial", status
    assert status["error"] is None and status["progress_percentage"] == 100.0
    for seen in polls:
        assert_invariant(seen)
    # never read as failed, nor as ended with calls still to do ("pending" after the end), along the way
    assert {seen["overall_status"] for seen in polls} <= {"processing", "partial"}
    run_id = status["execution_name"]
    dying = set(_chunk(platform, client_id, run_id, DYING_CHUNK))
    calls = _calls(platform, client_id)
    transcribed = {sk: call for sk, call in calls.items() if "transcribe_status" in call}
    assert len(transcribed) == status["total_calls"] > len(dying) > 0  # there are other chunks

    # the dying chunk (twice: its one retry dies too): every call failed, saying why
    ended = {sk: (transcribed[sk]["transcribe_status"], transcribed[sk].get("transcribe_error")) for sk in dying}
    assert ended == dict.fromkeys(dying, ("failed", DEATHS[death].reason))
    # every other chunk completed
    others = {sk: call["transcribe_status"] for sk, call in transcribed.items() if sk not in dying}
    assert set(others.values()) == {"success"}, others
    breakdown = status["status_breakdown"]
    assert (breakdown["failed"], breakdown["success"]) == (len(dying), len(others))
    summary = platform.boto3_client("stepfunctions").describe_execution(
        executionArn=platform.execution_arn("transcribe", run_id))
    assert summary["status"] == "SUCCEEDED"  # RecordSuccess, not RecordFailure


def test_the_fail_chunk_sample_event_runs_on_its_handler(platform: LocalPlatform, new_client: Any) -> None:
    """events/fail_chunk.json (for `sam local invoke`) is accepted by its handler: here on a chunk of calls the run
    never had (an empty one), so nothing changes."""
    client_id = new_client()
    event = json.loads((EVENTS / "fail_chunk.json").read_text(encoding="utf-8"))
    event |= {"client_id": client_id, "chunk_key": plan_key(client_id, event["run_id"], "transcribe-00000")}
    platform.boto3_client("s3").put_object(Bucket=platform.env["CALLSIGHT_BUCKET"], Key=event["chunk_key"], Body=b"[]")
    answer = platform.boto3_client("lambda").invoke(FunctionName="FailChunkFunction",
                                                    Payload=json.dumps(event).encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer and body["failed"] == 0, body
