"""Planning a per-call step: which calls go to pending, counted once, and how they are chunked."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import Any

from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.steps import audio_seconds, needs_transcript, plan_calls

NOV = DateRange(date(2026, 11, 1), date(2026, 11, 30))


def _synced(calls: CallRepository, count: int) -> list[CallKey]:
    calls.insert_many("sync", [{"call_id": f"leads-{i}", "day": f"2026-11-{1 + i % 28:02d}", "sync_status": "success",
                                "recording_key": f"recordings/c/{i}.wav"} for i in range(count)])
    return sorted((CallKey(f"2026-11-{1 + i % 28:02d}", f"leads-{i}") for i in range(count)), key=lambda k: k.sk)


def _plan(calls: CallRepository, bucket: str, run_id: str, *, force: bool = False, chunk_size: int = 12,
          max_chunks: int = 2000) -> dict[str, Any]:
    return plan_calls(calls, ObjectStore(bucket), process="transcribe", days=NOV, run_id=run_id, force=force,
                      eligible=needs_transcript, chunk_size=chunk_size, max_chunks=max_chunks)


def test_new_calls_are_counted_once_and_a_huge_range_gets_larger_chunks_not_more(table: Table, bucket: str) -> None:
    calls = CallRepository(table, "p1")
    keys = _synced(calls, 230)
    plan = _plan(calls, bucket, "r1", chunk_size=2, max_chunks=10)
    chunks = [ObjectStore(bucket).get_json(key) for key in plan["chunks"]]
    assert len(chunks) == 10 and {len(c) for c in chunks[:-1]} == {23}
    assert sorted(entry["sk"] for chunk in chunks for entry in chunk) == [k.sk for k in keys]
    assert plan["planned"] == {"planned": 230, "new": 230, "retried_failed": 0, "recovered_processing": 0,
                               "forced": 0, "chunks": 10}
    counts = CounterRepository(table).summed("p1", "transcribe", NOV)
    assert (counts["total"], counts["pending"]) == (230, 230)
    # planned again: the pending calls are planned again, nothing is counted twice
    assert _plan(calls, bucket, "r2")["planned"]["new"] == 0
    assert CounterRepository(table).summed("p1", "transcribe", NOV) == counts


def test_only_failed_and_interrupted_calls_are_redone_unless_forced(table: Table, bucket: str) -> None:
    calls = CallRepository(table, "p2")
    keys = _synced(calls, 6)
    _plan(calls, bucket, "r1")
    for key, to in zip(keys, ("success", "success", "failed", "processing", "success", "failed"), strict=True):
        assert calls.transition(key, "transcribe", "pending", "processing")
        if to != "processing":
            assert calls.transition(key, "transcribe", "processing", to)
    plan = _plan(calls, bucket, "r2")
    assert plan["planned"] == {"planned": 3, "new": 0, "retried_failed": 2, "recovered_processing": 1,
                               "forced": 0, "chunks": 1}
    forced = _plan(calls, bucket, "r3", force=True)["planned"]
    assert forced["planned"] == 6 and forced["forced"] == 3
    counts = CounterRepository(table).summed("p2", "transcribe", NOV)
    assert (counts["total"], counts["pending"], counts["success"], counts["failed"]) == (6, 6, 0, 0)


def test_weighed_chunks_stay_under_the_budget_and_a_heavy_call_gets_a_chunk_of_its_own(table: Table,
                                                                                      bucket: str) -> None:
    calls = CallRepository(table, "p3")
    keys = _synced(calls, 40)
    weights = {key.sk: (500 if i == 7 else 10 + i % 5 * 10) for i, key in enumerate(keys)}
    plan = plan_calls(calls, ObjectStore(bucket), process="transcribe", days=NOV, run_id="r1", force=False,
                      eligible=needs_transcript, chunk_size=12, weigh=lambda item: weights[item["sk"]], budget=100)
    chunks = [[entry["sk"] for entry in ObjectStore(bucket).get_json(key)] for key in plan["chunks"]]
    assert sorted(sk for chunk in chunks for sk in chunk) == [k.sk for k in keys]  # every call once, in order
    loads = [sum(weights[sk] for sk in chunk) for chunk in chunks]
    assert all(load <= 100 for load, chunk in zip(loads, chunks, strict=True) if len(chunk) > 1)
    assert [keys[7].sk] in chunks  # over the budget alone: its own chunk
    # merging any two neighbours would pass the budget: chunks are as large as they can be
    assert all(a + b > 100 for a, b in pairwise(loads))
    # never more than max_chunks: a small budget grows instead
    capped = plan_calls(calls, ObjectStore(bucket), process="transcribe", days=NOV, run_id="r2", force=False,
                        eligible=needs_transcript, chunk_size=12, weigh=lambda item: weights[item["sk"]], budget=1,
                        max_chunks=5)
    assert len(capped["chunks"]) <= 5 and capped["planned"]["planned"] == 40


def test_transcription_chunks_are_cut_by_audio_seconds_and_by_calls(table: Table, bucket: str) -> None:
    """Hour-long calls get small chunks (a chunk's audio stays under the budget), short calls still stop at the
    calls limit; the weights are amoCRM's durations as DynamoDB returns them."""
    calls = CallRepository(table, "p4")
    durations = [3600, 3500, 3400, 60, 3000] + [30] * 30  # three long calls, a short, a long, thirty shorts
    calls.insert_many("sync", [{"call_id": f"leads-{i:02d}", "day": "2026-11-05", "sync_status": "success",
                                "recording_key": f"recordings/c/{i}.mp3", "duration": seconds}
                               for i, seconds in enumerate(durations)])
    plan = plan_calls(calls, ObjectStore(bucket), process="transcribe", days=NOV, run_id="r1", force=False,
                      eligible=needs_transcript, chunk_size=12, weigh=audio_seconds, budget=2 * 3600,
                      weighed_chunk_size=12)
    chunks = [[int(entry["sk"].rsplit("-", 1)[1]) for entry in ObjectStore(bucket).get_json(key)]
              for key in plan["chunks"]]
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(durations)))
    # [0, 1]: 7,100 s (a third hour-long call would pass 2 h); [2, 3, 4 and 9 shorts]: 12 calls; then 12 and 9
    assert [len(chunk) for chunk in chunks] == [2, 12, 12, 9]
    assert [sum(durations[i] for i in chunk) for chunk in chunks] == [7100, 6730, 360, 270]
    # a range too big for max_chunks: both limits grow, never more chunks
    capped = plan_calls(calls, ObjectStore(bucket), process="transcribe", days=NOV, run_id="r2", force=False,
                        eligible=needs_transcript, chunk_size=12, weigh=audio_seconds, budget=2 * 3600,
                        weighed_chunk_size=2, max_chunks=3)
    assert len(capped["chunks"]) <= 3 and capped["planned"]["planned"] == len(durations)


def test_a_call_without_a_usable_duration_weighs_nothing() -> None:
    assert [audio_seconds(call) for call in ({"duration": Decimal("61")}, {"duration": 12.7}, {}, {"duration": "9"},
                                             {"duration": True})] == [61, 12, 0, 0, 0]
