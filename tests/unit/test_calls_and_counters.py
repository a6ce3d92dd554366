"""Calls and status counters: every transition counted exactly once, inserts idempotent."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from botocore.exceptions import ClientError

from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.runs import RunRepository, running_check
from callsight.dal.table import Table
from callsight.dates import DateRange

NOV = DateRange(date(2026, 11, 1), date(2026, 11, 30))


def _call(i: int, day: str, *, skip: str | None = None) -> dict[str, object]:
    call: dict[str, object] = {"call_id": f"leads-{i}", "day": day, "duration": 60,
                               "sync_status": "success" if skip else "pending"}
    if skip:
        call["sync_skip"] = skip
    return call


def _invariant(counts: dict[str, int]) -> None:
    assert counts["pending"] + counts["processing"] + counts["success"] + counts["failed"] == counts["total"]


def test_insert_many_counts_per_day_and_is_idempotent(table: Table) -> None:
    calls = CallRepository(table, "c1")
    batch = [_call(i, f"2026-11-{1 + i % 3:02d}", skip="no_recording" if i % 5 == 0 else None) for i in range(250)]
    assert calls.insert_many("sync", batch) == 250
    counts = CounterRepository(table).summed("c1", "sync", NOV)
    assert counts["total"] == 250 and counts["success"] == 50 and counts["pending"] == 200
    assert counts["skipped_no_recording"] == 50
    _invariant(counts)
    # the same calls again (a re-sync, a retried task): nothing inserted, nothing counted
    assert calls.insert_many("sync", batch) == 0
    assert CounterRepository(table).summed("c1", "sync", NOV) == counts
    # only the days asked for are summed
    first_day = CounterRepository(table).summed("c1", "sync", DateRange(date(2026, 11, 1), date(2026, 11, 1)))
    assert first_day["total"] == len([c for c in batch if c["day"] == "2026-11-01"])


def test_a_transition_counts_once_and_a_repeat_counts_nothing(table: Table) -> None:
    calls = CallRepository(table, "c2")
    calls.insert_many("sync", [_call(1, "2026-11-05"), _call(2, "2026-11-05")])
    key = CallKey("2026-11-05", "leads-1")
    assert calls.transition(key, "sync", "pending", "processing", set_attrs={"sync_run": "r1"})
    assert not calls.transition(key, "sync", "pending", "processing")  # duplicate delivery
    assert calls.transition(key, "sync", "processing", "failed", set_attrs={"sync_error": "HTTP 404"})
    assert not calls.transition(key, "sync", "processing", "success")  # late duplicate of another outcome
    counts = CounterRepository(table).summed("c2", "sync", NOV)
    assert (counts["pending"], counts["processing"], counts["success"], counts["failed"]) == (1, 0, 0, 1)
    _invariant(counts)
    item = calls.get(key)
    assert item is not None and item["sync_status"] == "failed" and item["sync_error"] == "HTTP 404"


def test_skip_reason_moves_with_the_status(table: Table) -> None:
    calls = CallRepository(table, "c3")
    calls.insert_many("sync", [_call(1, "2026-11-07", skip="no_recording")])
    key = CallKey("2026-11-07", "leads-1")
    # the note got a recording: back to pending, the skip reason and its count go away
    assert calls.transition(key, "sync", "success", "pending", frm_skip="no_recording")
    counts = CounterRepository(table).summed("c3", "sync", NOV)
    assert counts["pending"] == 1 and counts["success"] == 0 and counts.get("skipped_no_recording", 0) == 0
    item = calls.get(key)
    assert item is not None and "sync_skip" not in item


def test_range_query_returns_only_the_range(table: Table) -> None:
    calls = CallRepository(table, "c4")
    calls.insert_many("sync", [_call(1, "2026-10-31"), _call(2, "2026-11-01"), _call(3, "2026-11-30"),
                               _call(4, "2026-12-01")])
    assert sorted(i["call_id"] for i in calls.in_range(NOV)) == ["leads-2", "leads-3"]


def test_transition_many_moves_calls_by_day_and_counts_each_once(table: Table) -> None:
    calls = CallRepository(table, "c5")
    batch = [_call(i, f"2026-11-{10 + i % 2:02d}") for i in range(230)]
    calls.insert_many("sync", batch)
    keys = [CallKey(str(c["day"]), str(c["call_id"])) for c in batch]
    # one call leaves pending meanwhile: its transaction falls back to call by call, the others still move
    assert calls.transition(keys[7], "sync", "pending", "success")
    moved = calls.transition_many("transcribe", [(k, None) for k in keys[:200]], "pending")
    assert len(moved) == 200  # every call joins the new process, whatever its sync status
    moved = calls.transition_many("sync", [(k, "pending") for k in keys], "failed", remove=["sync_error"])
    assert set(moved) == set(keys) - {keys[7]}
    assert calls.transition_many("sync", [(k, "pending") for k in keys], "failed") == []  # a repeat moves nothing
    sync = CounterRepository(table).summed("c5", "sync", NOV)
    assert (sync["total"], sync["pending"], sync["success"], sync["failed"]) == (230, 0, 1, 229)
    _invariant(sync)
    transcribe = CounterRepository(table).summed("c5", "transcribe", NOV)
    assert (transcribe["total"], transcribe["pending"]) == (200, 200)
    _invariant(transcribe)


class _Conflicting:
    """A DynamoDB client whose first transactions are cancelled as DynamoDB cancels them for ``reason``."""

    def __init__(self, real: Any, reason: str, times: int) -> None:
        self.real, self.reason, self.left, self.calls = real, reason, times, 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                               "CancellationReasons": [{"Code": self.reason}, {"Code": "None"}]},
                              "TransactWriteItems")
        return self.real.transact_write_items(**kwargs)


def test_a_transaction_conflict_is_tried_again_not_taken_for_a_false_condition(table: Table) -> None:
    calls = CallRepository(table, "c6")
    calls.insert_many("sync", [_call(1, "2026-11-05")])
    key = CallKey("2026-11-05", "leads-1")
    table.client = _Conflicting(table.client, "TransactionConflict", times=2)
    assert calls.transition(key, "sync", "pending", "processing")  # moved on the third attempt, counted once
    assert table.client.calls == 3
    counts = CounterRepository(table).summed("c6", "sync", NOV)
    assert (counts["pending"], counts["processing"]) == (0, 1)
    _invariant(counts)


def test_a_cancellation_that_retrying_cannot_mend_is_raised_not_swallowed(table: Table) -> None:
    calls = CallRepository(table, "c7")
    calls.insert_many("sync", [_call(1, "2026-11-05")])
    table.client = _Conflicting(table.client, "ValidationError", times=1)
    with pytest.raises(ClientError):
        calls.transition(CallKey("2026-11-05", "leads-1"), "sync", "pending", "processing")
    assert CounterRepository(table).summed("c7", "sync", NOV)["pending"] == 1


def test_a_guarded_transition_holds_only_while_its_run_is_recorded_running(table: Table) -> None:
    calls = CallRepository(table, "c9")
    calls.insert_many("transcribe", [{"call_id": f"leads-{i}", "day": "2026-11-07", "transcribe_status": "pending"}
                                     for i in range(2)])
    first, second = CallKey("2026-11-07", "leads-0"), CallKey("2026-11-07", "leads-1")
    runs = RunRepository(table)
    runs.started("c9", "transcribe", NOV, execution_name="run-a", execution_arn="arn-a")
    guard = running_check("c9", "transcribe", NOV, "run-a")
    assert calls.transition(first, "transcribe", "pending", "processing", guard=guard)
    assert not calls.transition(second, "transcribe", "pending", "processing",
                                guard=running_check("c9", "transcribe", NOV, "run-b"))  # not the range's run
    runs.finished("c9", "transcribe", NOV, execution_name="run-a", status="ABORTED")
    before = CounterRepository(table).summed("c9", "transcribe", NOV)
    assert not calls.transition(second, "transcribe", "pending", "processing", guard=guard)
    assert CounterRepository(table).summed("c9", "transcribe", NOV) == before
    assert (calls.get(second) or {})["transcribe_status"] == "pending"
    assert (before["pending"], before["processing"]) == (1, 1)
    _invariant(before)
