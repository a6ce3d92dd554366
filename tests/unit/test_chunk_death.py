"""A chunk whose worker died: its unfinished calls end failed with the reason, counted once; and a worker near its
timeout starts no more calls."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.recordings import ObjectStore, plan_key
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.runs import build_status, finish_run
from callsight.logic.steps import OUT_OF_TIME, ChunkWorker, death_reason, fail_chunk
from callsight.models import FailChunkTask, TaskError

DAYS = DateRange(date(2026, 11, 1), date(2026, 11, 30))
RUN = "clinic-transcribe-run-a"
TIMED_OUT = TaskError(Error="Sandbox.Timedout", Cause=json.dumps({
    "errorType": "Sandbox.Timedout", "errorMessage": "RequestId: 1f2e Error: Task timed out after 900.00 seconds"}))


def _lambda_error(error_type: str, message: str) -> TaskError:
    """What Step Functions' Catch holds for a Lambda function error: the type, and the error body as the cause."""
    return TaskError(Error=error_type, Cause=json.dumps({"errorType": error_type, "errorMessage": message}))


def _chunk(table: Table, bucket: str, client: str, process: str, n: int, *, run: str = RUN) -> FailChunkTask:
    """``n`` pending calls of ``client`` in one chunk of ``run`` (recorded running), as PlanCalls leaves them."""
    RunRepository(table).started(client, process, DAYS, execution_name=run, execution_arn="a")
    calls = CallRepository(table, client)
    calls.insert_many(process, [{"call_id": f"leads-{i}", "day": _key(i).day, f"{process}_status": "pending"}
                                for i in range(n)])
    key = plan_key(client, run, f"{process}-00000")
    ObjectStore(bucket).put_json(key, [{"sk": _key(i).sk} for i in range(n)])
    return FailChunkTask(client_id=client, process=process, run_id=run, chunk_key=key, start_date=DAYS.start,
                         end_date=DAYS.end, error=TIMED_OUT)


def _key(i: int) -> CallKey:
    return CallKey(f"2026-11-{10 + i % 3}", f"leads-{i}")


def _statuses(calls: CallRepository, process: str, n: int) -> list[str]:
    return [str((calls.get(_key(i)) or {}).get(f"{process}_status")) for i in range(n)]


def _assert_counters_match(table: Table, calls: CallRepository, client: str, process: str, n: int) -> dict[str, int]:
    """The day counters are the calls' statuses, exactly."""
    counts = CounterRepository(table).summed(client, process, DAYS)
    statuses = _statuses(calls, process, n)
    assert counts["total"] == n
    for status in ("pending", "processing", "success", "failed"):
        assert counts[status] == statuses.count(status), (status, counts, statuses)
    return counts


def test_a_dead_chunks_unfinished_calls_fail_with_the_reason_and_the_rest_is_left_alone(table: Table,
                                                                                        bucket: str) -> None:
    task = _chunk(table, bucket, "clinic", "transcribe", 6)
    calls = CallRepository(table, "clinic")
    # leads-0 pending (never started); leads-1 and -2 processing for this run (in flight when it died);
    # leads-3 succeeded and leads-4 failed before it died; leads-5 was taken by another run meanwhile
    for i in (1, 2, 3, 4):
        assert calls.transition(_key(i), "transcribe", "pending", "processing", set_attrs={"transcribe_run": RUN})
    assert calls.transition(_key(3), "transcribe", "processing", "success", set_attrs={"transcript_key": "t/3"})
    assert calls.transition(_key(4), "transcribe", "processing", "failed", set_attrs={"transcribe_error": "HTTP 400"})
    assert calls.transition(_key(5), "transcribe", "pending", "processing", set_attrs={"transcribe_run": "next-run"})

    result = fail_chunk(task, task.error, table=table, store=ObjectStore(bucket))

    assert result == {"failed": 3, "already_ended": 2, "other_run": 1, "left_pending": 0, "not_stored": 0}
    assert _statuses(calls, "transcribe", 6) == ["failed", "failed", "failed", "success", "failed", "processing"]
    for i in (0, 1, 2):
        assert (calls.get(_key(i)) or {})["transcribe_error"] == (
            "the worker was stopped after its 900 s timeout (Sandbox.Timedout); run the process again to retry "
            "this call")
    assert (calls.get(_key(3)) or {})["transcript_key"] == "t/3"
    assert (calls.get(_key(4)) or {})["transcribe_error"] == "HTTP 400"
    assert (calls.get(_key(5)) or {})["transcribe_run"] == "next-run"
    before = _assert_counters_match(table, calls, "clinic", "transcribe", 6)
    assert (before["pending"], before["processing"], before["success"], before["failed"]) == (0, 1, 1, 4)

    # Step Functions delivers the task again (a retry after a lost answer): nothing more changes
    again = fail_chunk(task, task.error, table=table, store=ObjectStore(bucket))
    assert again == {"failed": 0, "already_ended": 5, "other_run": 1, "left_pending": 0, "not_stored": 0}
    assert CounterRepository(table).summed("clinic", "transcribe", DAYS) == before


def test_the_run_then_ends_partial_with_every_call_finished(table: Table, bucket: str) -> None:
    task = _chunk(table, bucket, "clinic", "analyze", 4, run="clinic-analyze-run")
    calls = CallRepository(table, "clinic")
    assert calls.transition(_key(0), "analyze", "pending", "processing", set_attrs={"analyze_run": task.run_id})
    assert calls.transition(_key(0), "analyze", "processing", "success", set_attrs={"analysis": {"ok": True}})
    assert calls.transition(_key(1), "analyze", "pending", "processing", set_attrs={"analyze_run": task.run_id})
    fail_chunk(task, _lambda_error("Runtime.OutOfMemory", "RequestId: 9 Error: Runtime exited with error: signal: "
                                   "killed"), table=table, store=ObjectStore(bucket))
    summary = finish_run(table, client_id="clinic", process="analyze", days=DAYS, run_id=task.run_id,
                         outcome="SUCCEEDED")
    assert summary["overall_status"] == "partial" and summary["interrupted"] == 0
    status = build_status(table, client_id="clinic", process="analyze", days=DAYS)
    assert status.model_dump()["status_breakdown"] == {"pending": 0, "processing": 0, "success": 1, "failed": 3}
    assert "ran out of memory (Runtime.OutOfMemory)" in str((calls.get(_key(1)) or {})["analyze_error"])


def test_a_stopped_runs_pending_calls_are_left_for_the_next_run(table: Table, bucket: str) -> None:
    """Once the run is recorded ended, its pending calls belong to whichever run plans them next."""
    task = _chunk(table, bucket, "clinic", "sync", 3, run="clinic-sync-run")
    calls = CallRepository(table, "clinic")
    assert calls.transition(_key(0), "sync", "pending", "processing", set_attrs={"sync_run": task.run_id})
    RunRepository(table).finished("clinic", "sync", DAYS, execution_name=task.run_id, status="ABORTED")
    result = fail_chunk(task, TIMED_OUT, table=table, store=ObjectStore(bucket))
    assert (result["failed"], result["left_pending"]) == (1, 2)  # its own processing call still ends failed
    assert _statuses(calls, "sync", 3) == ["failed", "pending", "pending"]
    _assert_counters_match(table, calls, "clinic", "sync", 3)


@pytest.mark.parametrize(("error", "reason"), [
    (TIMED_OUT, "the worker was stopped after its 900 s timeout (Sandbox.Timedout); run the process again to retry "
                "this call"),
    (TaskError(Error="States.Timeout", Cause="The task timed out."),
     "the worker was stopped at its timeout (States.Timeout); run the process again to retry this call"),
    (_lambda_error("Runtime.OutOfMemory", "RequestId: 9 Error: Runtime exited with error: signal: killed"),
     "the worker ran out of memory (Runtime.OutOfMemory); run the process again to retry this call, and raise "
     "the function's MemorySize if it fails again"),
    (_lambda_error("Runtime.ExitError", "RequestId: 9d1c-4e Error: Runtime exited with error: exit status 1"),
     "the worker's runtime exited (Runtime.ExitError: exit status 1); run the process again to retry this call"),
    (_lambda_error("Runtime.ExitError", ""), "the worker's runtime exited (Runtime.ExitError); run the process "
                                             "again to retry this call"),
    (TaskError(Error="Lambda.Unknown", Cause="The cause could not be determined because Lambda did not return an "
                                             "error type."),
     "the worker ended without an answer (Lambda.Unknown: out of memory or its timeout, likely); run the process "
     "again to retry this call"),
    (_lambda_error("KeyError", "'sk'"), "the worker crashed: KeyError: 'sk'; run the process again to retry this call"),
    (TaskError(Error="States.TaskFailed"), "the worker crashed: States.TaskFailed; run the process again to retry "
                                           "this call"),
])
def test_the_reason_says_how_the_worker_died(error: TaskError, reason: str) -> None:
    assert death_reason(error) == reason


def test_a_crash_message_is_cut_and_keeps_no_link_path_or_query() -> None:
    message = "ReadTimeout for https://pbx.clinic.example/rec/77.mp3?token=SECRET123 " + "x" * 500
    reason = death_reason(_lambda_error("ReadTimeout", message))
    assert "SECRET123" not in reason and "/rec/77.mp3" not in reason
    assert reason.startswith("the worker crashed: ReadTimeout: ReadTimeout for https://pbx.clinic.example/...")
    assert len(reason) < 300


def test_the_fail_chunk_event_is_parsed_from_step_functions_catch_result() -> None:
    event = {"client_id": "clinic", "process": "transcribe", "run_id": RUN, "chunk_key": "runs/x.json",
             "start_date": "2026-11-01", "end_date": "2026-11-30",
             "error": {"Error": "Runtime.ExitError", "Cause": None}}
    task = FailChunkTask.model_validate(event)
    assert task.error == TaskError(Error="Runtime.ExitError") and task.range == DAYS


# ------------------------------------------------------------------------------------------ deadline awareness
class Clock:
    """A Lambda context's remaining time, moved by the test's work."""

    def __init__(self, remaining_s: float) -> None:
        self.remaining_s = remaining_s

    def remaining_ms(self) -> int:
        return int(self.remaining_s * 1000)


def test_a_worker_near_its_timeout_starts_no_more_calls_and_fails_them_saying_so(table: Table, bucket: str) -> None:
    task = _chunk(table, bucket, "clinic", "transcribe", 6)
    calls = CallRepository(table, "clinic")
    clock = Clock(remaining_s=600)
    worked: list[str] = []

    def work(key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        worked.append(key.call_id)
        clock.remaining_s -= 170
        return {"transcript_key": f"t/{key.call_id}"}

    entries = ObjectStore(bucket).get_json(task.chunk_key)
    result = ChunkWorker(process="transcribe", run_id=RUN, calls=calls, concurrency=1, work=work, days=DAYS,
                         remaining_ms=clock.remaining_ms, margin_seconds=120).run(entries)
    # calls start with 600, 430 and 260 s left; with 90 s, under the margin, no more
    assert worked == ["leads-0", "leads-1", "leads-2"]
    assert (result["succeeded"], result["failed"], result[OUT_OF_TIME]) == (3, 3, 3)
    assert _statuses(calls, "transcribe", 6) == ["success"] * 3 + ["failed"] * 3
    assert (calls.get(_key(5)) or {})["transcribe_error"] == (
        "not started: the worker ran out of time (under 120 s of its timeout left); run the process again to "
        "retry this call")
    _assert_counters_match(table, calls, "clinic", "transcribe", 6)


def test_without_a_clock_every_call_is_worked_on(table: Table, bucket: str) -> None:
    task = _chunk(table, bucket, "clinic", "analyze", 3)
    result = ChunkWorker(process="analyze", run_id=RUN, calls=CallRepository(table, "clinic"), concurrency=2,
                         work=lambda key, call: {"analysis": {"ok": True}}, days=DAYS, margin_seconds=120
                         ).run(ObjectStore(bucket).get_json(task.chunk_key))
    assert (result["succeeded"], result[OUT_OF_TIME]) == (3, 0)


def test_the_margin_is_at_most_a_quarter_of_the_time_the_task_had(table: Table, bucket: str) -> None:
    """A task started with 8 s (a short test timeout) keeps working until 2 s are left, not 120."""
    task = _chunk(table, bucket, "clinic", "analyze", 5)
    calls = CallRepository(table, "clinic")
    clock = Clock(remaining_s=8)

    def work(key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        clock.remaining_s -= 2.5
        return {"analysis": {"ok": True}}

    result = ChunkWorker(process="analyze", run_id=RUN, calls=calls, concurrency=1, work=work, days=DAYS,
                         remaining_ms=clock.remaining_ms, margin_seconds=120
                         ).run(ObjectStore(bucket).get_json(task.chunk_key))
    assert (result["succeeded"], result[OUT_OF_TIME]) == (3, 2)  # started with 8, 5.5 and 3 s left; not with 0.5
    assert "under 2 s of its timeout left" in str((calls.get(_key(4)) or {})["analyze_error"])
