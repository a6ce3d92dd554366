"""Starting a process, reporting its status, and recording its end.

A start takes the client's lock (one process per client), records the run and starts the state
machine execution. The run ends through the FinishRun task (success or failure path) or, when the
execution could not run its last state (aborted, timed out), through the Step Functions status
change event: either way the calls still ``processing`` are failed, the run records its outcome
and the lock is released. A start that finds a lock whose execution has ended takes it over.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from callsight.dal.calls import CallKey, CallRepository, CounterRepository, status_attr
from callsight.dal.clients import ClientProfile, ClientRepository
from callsight.dal.runs import RUNNING, ClientLock, RunRepository
from callsight.dal.table import ConditionFailed, Table
from callsight.dates import DateRange
from callsight.errors import ProcessAlreadyRunning
from callsight.logic.start_guard import StartGuard, StartLimits
from callsight.models import PostgresSyncStatus, StatusBreakdown, StatusResponse, SyncNotes, range_query
from callsight.processes import REPORT_PATH, CallStatus, Process

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(client_id: str, process: str, days: DateRange, now: datetime) -> str:
    """Readable and unique: ``<client>-<process>-<start>-<end>-<UTC time>-<random>`` (80 chars max)."""
    tail = f"{process}-{days.start:%Y%m%d}-{days.end:%Y%m%d}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    client = _NAME_UNSAFE.sub("_", client_id)[: 80 - len(tail) - 1]
    return f"{client}-{tail}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{machine}:{name}"


def console_url(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[4] == "123456789012":  # moto's account: no console
        return None
    region = parts[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


@dataclass(frozen=True)
class StartedRun:
    execution_name: str
    execution_arn: str


class RunStarter:
    """``limits``: the clinic-level guard on starts (``callsight.logic.start_guard``; the start handler always passes
    the stack's); None starts without it."""

    def __init__(self, table: Table, sfn: Any, *, lock_grace_seconds: int = 60,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), limits: StartLimits | None = None) -> None:
        self.clients = ClientRepository(table)
        self.lock = ClientLock(table)
        self.runs = RunRepository(table)
        self.sfn = sfn
        self.grace = lock_grace_seconds
        self.clock = clock
        self.guard = StartGuard(table, limits) if limits is not None else None

    def start(self, *, client_id: str, process: str, days: DateRange, state_machine_arn: str,
              force: bool = False, confirm_calls: int | None = None) -> StartedRun:
        profile = self.clients.get(client_id)  # ClientNotFound -> 404
        if force and self.guard is not None:
            self.guard.confirm_force(client_id, process, days, confirm_calls=confirm_calls)  # 409, nothing taken
        now = self.clock()
        name = execution_name(client_id, process, days, now)
        arn = execution_arn(state_machine_arn, name)
        counted = [self.guard.count_action(profile, now)] if self.guard is not None else []
        holder = self._acquire(profile, now, process=process, execution_name=name, execution_arn=arn, days=days,
                               together=counted)
        if holder is not None and self._is_stale(holder, now):
            self.lock.release(client_id, str(holder["execution_name"]))
            holder = self._acquire(profile, now, process=process, execution_name=name, execution_arn=arn, days=days,
                                   together=counted)
        if holder is not None:
            raise ProcessAlreadyRunning(client_id, str(holder.get("process")), str(holder.get("execution_name")),
                                        str(holder.get("start_date")), str(holder.get("end_date")))
        try:
            self.runs.started(client_id, process, days, execution_name=name, execution_arn=arn)
            self.sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps({
                "client_id": client_id, "process": process, "start_date": days.start.isoformat(),
                "end_date": days.end.isoformat(), "force": force,
            }))
        except Exception as exc:
            self.runs.finished(client_id, process, days, execution_name=name, status="FAILED",
                               error=f"the run could not start: {type(exc).__name__}")
            self.lock.release(client_id, name)
            if self.guard is not None:
                self.guard.give_back(client_id, now)
            raise
        return StartedRun(name, arn)

    def _acquire(self, profile: ClientProfile, now: datetime, *, process: str, execution_name: str,
                 execution_arn: str, days: DateRange, together: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The clinic's lock and this start's count in one transaction: the holder if the clinic is busy (nothing
        taken), TooManyStarts if it is free but at its limit of starts this hour (nothing taken either)."""
        try:
            return self.lock.try_acquire(profile.client_id, process=process, execution_name=execution_name,
                                         execution_arn=execution_arn, days=days, together=together)
        except ConditionFailed:
            if self.guard is None:
                raise
            raise self.guard.refused(profile, now) from None

    def wait_for_end(self, arn: str, seconds: float, *, poll: float = 0.5) -> dict[str, Any] | None:
        """The execution's description once it ended, or None if it still runs after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            described = dict(self.sfn.describe_execution(executionArn=arn))
            if described["status"] != RUNNING:
                return described
            if time.monotonic() + poll > deadline:
                return None
            time.sleep(poll)

    def _is_stale(self, holder: dict[str, Any], now: datetime) -> bool:
        """The holder's execution has ended (or never started within the grace period)."""
        try:
            status = self.sfn.describe_execution(executionArn=holder["execution_arn"])["status"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ExecutionDoesNotExist":
                return False
            acquired = datetime.fromisoformat(str(holder["acquired_at"]).replace("Z", "+00:00"))
            return (now - acquired).total_seconds() > self.grace
        except KeyError:
            return True
        return bool(status != RUNNING)


def build_status(table: Table, *, client_id: str, process: str, days: DateRange) -> StatusResponse:
    """A bounded read: one GetItem of the run and one Query of at most 366 day counters."""
    counts = CounterRepository(table).summed(client_id, process, days)
    run = RunRepository(table).get(client_id, process, days)
    total = counts["total"]
    breakdown = StatusBreakdown(**{s.value: counts[s.value] for s in CallStatus})
    finished = breakdown.success + breakdown.failed
    unfinished = breakdown.pending + breakdown.processing
    run_status = run["status"] if run else None
    error = None
    if run_status == RUNNING or (run and run.get("closing") and breakdown.processing):
        overall = "processing"  # running, or ended and failing the calls it left in progress (finish_run)
    elif run_status in ("FAILED", "ABORTED", "TIMED_OUT"):
        overall, error = "failed", run.get("error") if run else None
        error = error or f"the run ended: {run_status}"
    elif total == 0:
        overall = "completed" if run_status == "SUCCEEDED" else "pending"
    elif unfinished:
        overall = "pending"  # never run on this range, or calls added since
    else:
        overall = "partial" if breakdown.failed else "completed"
    done = 100.0 if overall in ("completed", "partial") else 0.0
    progress = round(finished / total * 100, 2) if total else done
    return StatusResponse(
        overall_status=overall, total_calls=total, status_breakdown=breakdown, progress_percentage=progress,
        client_id=client_id, process=process, start_date=days.start.isoformat(), end_date=days.end.isoformat(),
        skipped={k.removeprefix("skipped_"): v for k, v in counts.items() if k.startswith("skipped_") and v},
        execution_name=run.get("execution_name") if run else None,
        started_at=run.get("started_at") if run else None, finished_at=run.get("finished_at") if run else None,
        error=error, console_url=console_url(run.get("execution_arn")) if run else None,
        **(_report_fields(client_id, days, run) if process == Process.RECOMMENDATIONS else {}),
        **(_fetch_fields(run) if process == Process.SYNC else {}),
    )


def _fetch_fields(run: dict[str, Any] | None) -> dict[str, Any]:
    """The sync run's account of the amoCRM notes (recorded by FetchCalls): rejects by reason, entities skipped."""
    fetched = (run or {}).get("fetched")
    if not isinstance(fetched, dict):
        return {}
    return {"rejected": fetched.get("rejected") or {}, "skipped_entities": fetched.get("skipped_entities") or {},
            "notes": SyncNotes.model_validate(fetched)}


def _report_fields(client_id: str, days: DateRange, run: dict[str, Any] | None) -> dict[str, Any]:
    """The recommendations run's report link and the state of the PostgreSQL sync that ends it."""
    if not run:
        return {}
    postgres = PostgresSyncStatus.model_validate(run.get("postgres") or {})
    if run.get("status") not in (RUNNING, "SUCCEEDED") and postgres.status in ("pending", "processing"):
        postgres.status = "failed"  # the run ended before or during the sync
    report_url = f"{REPORT_PATH}?{range_query(client_id, days)}" if run.get("report_key") else None
    return {"report_url": report_url, "postgres_sync": postgres}


def finish_run(table: Table, *, client_id: str, process: str, days: DateRange, run_id: str, outcome: str,
               error: str | None = None) -> dict[str, Any]:
    """Record the outcome, release the lock, fail this run's calls still in progress, summarise. Idempotent.

    The end is recorded first: from then on the run's workers claim nothing more (their claims check that the
    run is recorded running), so the sweep finds every call the run will ever have in progress. The lock goes
    at once (a frontend that reads the run ended may start the next process); a call the sweep reaches only
    after a next run claimed it is that run's and is left alone (``of_run``). Until the sweep is done the run is
    ``closing`` and its status reads ``processing``, so no one sees it ended with calls in progress."""
    runs = RunRepository(table)
    runs.finished(client_id, process, days, execution_name=run_id, status=outcome, error=error, closing=True)
    ClientLock(table).release(client_id, run_id)
    calls = CallRepository(table, client_id)
    attr = status_attr(process)
    interrupted = 0
    reason = f"interrupted: the run ended ({outcome}) before this call finished"
    in_progress = CounterRepository(table).summed(client_id, process, days)["processing"]
    for item in calls.in_range(days) if in_progress else []:  # the counters say whether a sweep is needed
        if item.get(attr) == CallStatus.PROCESSING and item.get(f"{process}_run") == run_id:
            interrupted += calls.transition(CallKey.from_sk(item["sk"]), process, CallStatus.PROCESSING,
                                            CallStatus.FAILED, set_attrs={f"{process}_error": reason}, of_run=run_id)
    status = build_status(table, client_id=client_id, process=process, days=days)
    summary = {"total_calls": status.total_calls, "status_breakdown": status.status_breakdown.model_dump(),
               "skipped": status.skipped, "interrupted": interrupted}
    if status.notes is not None:  # sync: what became of the amoCRM notes
        summary |= {"rejected": status.rejected, "skipped_entities": status.skipped_entities,
                    "notes": status.notes.model_dump()}
    runs.set_fields(client_id, process, days, execution_name=run_id, fields={"summary": summary, "closing": False})
    return {**summary, "overall_status": status.overall_status, "execution_name": run_id, "error": error}


def describe_error(error: Any) -> str:
    """A Step Functions Catch result ``{"Error", "Cause"}`` as one readable line."""
    if not isinstance(error, dict):
        return str(error)
    name = str(error.get("Error", "Error"))
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict):
            cause = parsed.get("errorMessage") or cause
    except (TypeError, ValueError):
        pass
    return f"{name}: {cause}" if cause else name
