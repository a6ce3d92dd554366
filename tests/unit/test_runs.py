"""Starting runs (one process per client, stale locks), their status and their end."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.clients import ClientProfile, ClientRepository
from callsight.dal.runs import ClientLock, RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.errors import ClientNotFound, ProcessAlreadyRunning
from callsight.logic.runs import RunStarter, build_status, execution_arn, execution_name, finish_run
from callsight.logic.steps import ENDED_ELSEWHERE, RUN_ENDED, ChunkWorker

MACHINE = "arn:aws:states:eu-central-1:111122223333:stateMachine:Sync"
DAYS = DateRange(date(2026, 11, 1), date(2026, 11, 30))


class FakeStepFunctions:
    """Just enough of the Step Functions API: executions are started and their status set by the test."""

    def __init__(self) -> None:
        self.executions: dict[str, dict[str, Any]] = {}

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        arn = execution_arn(stateMachineArn, name)
        self.executions[arn] = {"status": "RUNNING", "input": input}
        return {"executionArn": arn}

    def describe_execution(self, *, executionArn: str) -> dict[str, Any]:
        if executionArn not in self.executions:
            raise ClientError({"Error": {"Code": "ExecutionDoesNotExist", "Message": "no"}}, "DescribeExecution")
        return self.executions[executionArn]


@pytest.fixture
def clinic(table: Table) -> str:
    ClientRepository(table).put(ClientProfile(client_id="clinic", amocrm_subdomain="clinic"))
    return "clinic"


def test_execution_names_are_readable_unique_and_short() -> None:
    now = datetime(2026, 11, 28, 11, 5, 1, tzinfo=UTC)
    name = execution_name("clinic", "sync", DAYS, now)
    assert name.startswith("clinic-sync-20261101-20261130-20261128T110501-")
    assert name != execution_name("clinic", "sync", DAYS, now)
    long = execution_name("клиника " * 20, "transcribe", DAYS, now)
    assert len(long) <= 80 and all(c.isalnum() or c in "-_" for c in long)


def test_one_process_per_client(table: Table, clinic: str) -> None:
    sfn = FakeStepFunctions()
    starter = RunStarter(table, sfn)
    first = starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    with pytest.raises(ProcessAlreadyRunning) as refused:
        starter.start(client_id=clinic, process="transcribe", days=DAYS, state_machine_arn=MACHINE)
    assert refused.value.process == "sync" and refused.value.execution_name == first.execution_name
    assert "sync" in str(refused.value)
    # the execution ended without releasing (aborted, say): the next start takes the lock over
    sfn.executions[first.execution_arn]["status"] = "ABORTED"
    second = starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert ClientLock(table).holder(clinic)["execution_name"] == second.execution_name  # type: ignore[index]


def test_a_lock_whose_execution_never_started_expires_after_the_grace(table: Table, clinic: str) -> None:
    sfn = FakeStepFunctions()
    now = datetime.now(UTC)
    lock = ClientLock(table)
    assert lock.try_acquire(clinic, process="sync", execution_name="ghost", execution_arn=f"{MACHINE}:ghost",
                            days=DAYS) is None
    soon = RunStarter(table, sfn, lock_grace_seconds=60, clock=lambda: now + timedelta(seconds=5))
    with pytest.raises(ProcessAlreadyRunning):
        soon.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    later = RunStarter(table, sfn, lock_grace_seconds=60, clock=lambda: now + timedelta(seconds=120))
    later.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)


def test_unknown_client_is_refused_before_anything_starts(table: Table) -> None:
    sfn = FakeStepFunctions()
    with pytest.raises(ClientNotFound):
        RunStarter(table, sfn).start(client_id="nobody", process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert sfn.executions == {}


def test_a_failed_start_releases_the_lock(table: Table, clinic: str) -> None:
    class Broken(FakeStepFunctions):
        def start_execution(self, **kwargs: Any) -> dict[str, str]:
            raise ClientError({"Error": {"Code": "StateMachineDoesNotExist", "Message": "x"}}, "StartExecution")

    with pytest.raises(ClientError):
        RunStarter(table, Broken()).start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert ClientLock(table).holder(clinic) is None
    status = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert status.overall_status == "failed" and "could not start" in (status.error or "")


def _calls(table: Table, client: str, statuses: list[str]) -> CallRepository:
    calls = CallRepository(table, client)
    calls.insert_many("sync", [{"call_id": f"leads-{i}", "day": "2026-11-10", "sync_status": "pending"}
                               for i in range(len(statuses))])
    for i, status in enumerate(statuses):
        key = CallKey("2026-11-10", f"leads-{i}")
        if status != "pending":
            calls.transition(key, "sync", "pending", "processing", set_attrs={"sync_run": "run-1"})
        if status in ("success", "failed"):
            calls.transition(key, "sync", "processing", status)
    return calls


def test_status_through_a_run(table: Table, clinic: str) -> None:
    assert build_status(table, client_id=clinic, process="sync", days=DAYS).overall_status == "pending"
    RunRepository(table).started(clinic, "sync", DAYS, execution_name="run-1", execution_arn=f"{MACHINE}:run-1")
    ClientLock(table).try_acquire(clinic, process="sync", execution_name="run-1", execution_arn="a", days=DAYS)
    _calls(table, clinic, ["success", "success", "failed", "processing", "pending", "pending"])
    running = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert running.overall_status == "processing"
    assert running.status_breakdown.model_dump() == {"pending": 2, "processing": 1, "success": 2, "failed": 1}
    assert running.progress_percentage == 50.0 and running.total_calls == 6
    assert running.execution_name == "run-1" and running.started_at and running.finished_at is None

    summary = finish_run(table, client_id=clinic, process="sync", days=DAYS, run_id="run-1", outcome="SUCCEEDED")
    assert summary["interrupted"] == 1  # the call left processing by this run is failed, not stuck
    done = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert done.overall_status == "pending"  # two calls were never processed: the range is not done
    assert done.status_breakdown.processing == 0 and done.finished_at
    assert ClientLock(table).holder(clinic) is None
    # idempotent: a duplicate finish (the event after the state) changes nothing
    again = finish_run(table, client_id=clinic, process="sync", days=DAYS, run_id="run-1", outcome="ABORTED")
    assert again["interrupted"] == 0
    assert build_status(table, client_id=clinic, process="sync", days=DAYS).model_dump() == done.model_dump()


def test_finished_with_failures_is_partial_at_100_percent(table: Table, clinic: str) -> None:
    RunRepository(table).started(clinic, "sync", DAYS, execution_name="run-1", execution_arn="a")
    _calls(table, clinic, ["success", "failed", "success"])
    finish_run(table, client_id=clinic, process="sync", days=DAYS, run_id="run-1", outcome="SUCCEEDED")
    status = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert status.overall_status == "partial" and status.progress_percentage == 100.0


def test_a_failed_run_reports_its_error(table: Table, clinic: str) -> None:
    RunRepository(table).started(clinic, "sync", DAYS, execution_name="run-1", execution_arn="a")
    finish_run(table, client_id=clinic, process="sync", days=DAYS, run_id="run-1", outcome="FAILED",
               error="AmoCrmAuthError: amoCRM refused access (HTTP 401)")
    status = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert status.overall_status == "failed" and "401" in (status.error or "")


def test_an_empty_range_after_a_finished_run_is_completed(table: Table, clinic: str) -> None:
    RunRepository(table).started(clinic, "sync", DAYS, execution_name="run-1", execution_arn="a")
    finish_run(table, client_id=clinic, process="sync", days=DAYS, run_id="run-1", outcome="SUCCEEDED")
    status = build_status(table, client_id=clinic, process="sync", days=DAYS)
    assert status.overall_status == "completed" and status.progress_percentage == 100.0
    assert status.total_calls == 0


def test_waiting_for_a_run_returns_its_end_or_gives_up(table: Table, clinic: str) -> None:
    sfn = FakeStepFunctions()
    starter = RunStarter(table, sfn)
    run = starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert starter.wait_for_end(run.execution_arn, 0.2, poll=0.05) is None  # still running: answer 202
    sfn.executions[run.execution_arn]["status"] = "SUCCEEDED"
    ended = starter.wait_for_end(run.execution_arn, 0.2, poll=0.05)
    assert ended is not None and ended["status"] == "SUCCEEDED"


def _pending_calls(table: Table, client: str, process: str, n: int) -> tuple[CallRepository, list[dict[str, str]]]:
    calls = CallRepository(table, client)
    calls.insert_many(process, [{"call_id": f"leads-{i}", "day": "2026-11-10", f"{process}_status": "pending"}
                                for i in range(n)])
    return calls, [{"sk": f"2026-11-10#leads-{i}"} for i in range(n)]


def test_a_stopped_runs_worker_claims_nothing_more(table: Table, clinic: str) -> None:
    """The run is recorded ABORTED while its worker is on its third call: nothing changes after that."""
    run = execution_name(clinic, "transcribe", DAYS, datetime.now(UTC))
    RunRepository(table).started(clinic, "transcribe", DAYS, execution_name=run, execution_arn="a")
    calls, entries = _pending_calls(table, clinic, "transcribe", 12)
    counters = CounterRepository(table)
    at_finish: dict[str, int] = {}

    def work(key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        if key.call_id == "leads-2":  # the execution is stopped: the status-change event ends the run
            finish_run(table, client_id=clinic, process="transcribe", days=DAYS, run_id=run, outcome="ABORTED")
            at_finish.update(counters.summed(clinic, "transcribe", DAYS))
        return {"transcript_key": f"t/{key.call_id}"}

    result = ChunkWorker(process="transcribe", run_id=run, calls=calls, concurrency=1, work=work, days=DAYS
                         ).run(entries)
    after = counters.summed(clinic, "transcribe", DAYS)
    assert after == at_finish  # recorded finished: no call claimed, none ended
    assert (after["pending"], after["processing"], after["success"], after["failed"]) == (9, 0, 2, 1)
    assert (result["succeeded"], result["failed"], result[RUN_ENDED], result[ENDED_ELSEWHERE]) == (2, 0, 9, 1)
    interrupted = calls.get(CallKey("2026-11-10", "leads-2")) or {}
    assert interrupted["transcribe_status"] == "failed" and "interrupted" in interrupted["transcribe_error"]


def test_only_the_ranges_current_run_claims_its_calls(table: Table, clinic: str) -> None:
    runs = RunRepository(table)
    old = execution_name(clinic, "analyze", DAYS, datetime(2026, 11, 28, 10, tzinfo=UTC))
    new = execution_name(clinic, "analyze", DAYS, datetime(2026, 11, 28, 11, tzinfo=UTC))
    runs.started(clinic, "analyze", DAYS, execution_name=old, execution_arn="a")
    runs.started(clinic, "analyze", DAYS, execution_name=new, execution_arn="b")  # the range's run is now `new`
    calls, entries = _pending_calls(table, clinic, "analyze", 5)

    def work(key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        return {"analysis": {"ok": True}}

    stale = ChunkWorker(process="analyze", run_id=old, calls=calls, concurrency=2, work=work, days=DAYS).run(entries)
    assert (stale["succeeded"], stale[RUN_ENDED]) == (0, 5)
    assert CounterRepository(table).summed(clinic, "analyze", DAYS)["pending"] == 5
    current = ChunkWorker(process="analyze", run_id=new, calls=calls, concurrency=2, work=work, days=DAYS).run(entries)
    assert current["succeeded"] == 5
    # a task invoked by hand, outside any run (no range), is not tied to a run
    calls, entries = _pending_calls(table, "other-clinic", "analyze", 3)
    assert ChunkWorker(process="analyze", run_id="by-hand", calls=calls, concurrency=2, work=work
                       ).run(entries)["succeeded"] == 3


def test_a_run_ending_with_calls_in_progress_reads_processing_until_they_are_failed(table: Table, clinic: str) -> None:
    """finish_run records the end first (so workers stop claiming), then fails what is left: in between, nobody
    reads the run as ended with calls still processing; and the clinic is free at once."""
    runs, lock = RunRepository(table), ClientLock(table)
    run = execution_name(clinic, "analyze", DAYS, datetime.now(UTC))
    assert lock.try_acquire(clinic, process="analyze", execution_name=run, execution_arn="a", days=DAYS) is None
    runs.started(clinic, "analyze", DAYS, execution_name=run, execution_arn="a")
    calls, _ = _pending_calls(table, clinic, "analyze", 3)
    for i in range(2):
        assert calls.transition(CallKey("2026-11-10", f"leads-{i}"), "analyze", "pending", "processing",
                                set_attrs={"analyze_run": run})
    # a next run's worker took leads-1 (a sweep reaching it later must leave it alone)
    calls.transition(CallKey("2026-11-10", "leads-1"), "analyze", "processing", "processing",
                     set_attrs={"analyze_run": "next-run"})

    runs.finished(clinic, "analyze", DAYS, execution_name=run, status="ABORTED", closing=True)  # the first write
    assert build_status(table, client_id=clinic, process="analyze", days=DAYS).overall_status == "processing"

    result = finish_run(table, client_id=clinic, process="analyze", days=DAYS, run_id=run, outcome="ABORTED")
    assert result["interrupted"] == 1 and lock.holder(clinic) is None
    assert (calls.get(CallKey("2026-11-10", "leads-1")) or {})["analyze_status"] == "processing"
    calls.transition(CallKey("2026-11-10", "leads-1"), "analyze", "processing", "success")  # the next run's
    status = build_status(table, client_id=clinic, process="analyze", days=DAYS)
    assert status.overall_status == "failed" and status.status_breakdown.processing == 0
    assert (status.status_breakdown.failed, status.status_breakdown.success) == (1, 1)
