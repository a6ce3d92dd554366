"""What every per-call process shares: planning the calls of a range, and working through a chunk.

Planning puts each call that needs the step in ``pending`` (a call new to the process joins its
total; ``failed`` and orphaned ``processing`` calls go back to ``pending``; with ``force``, so do
successes) and writes the pending calls to S3 in chunks, which the state machine fans out.

A chunk worker reads its calls in one BatchGetItem, claims each (``pending -> processing``, counted
once), does the work on the call as read, and ends it ``success`` or ``failed`` with the reason. A
retried delivery of the same run takes back the calls it had claimed; any other duplicate finds them
taken and leaves them alone. A claim holds only while the run is recorded running (a ConditionCheck
on the run in the claim's transaction): once a stopped or ended run is recorded finished, its workers
still in flight claim nothing more and leave the rest of their chunk pending.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger

from callsight.dal.calls import CallKey, CallRepository, status_attr
from callsight.dal.recordings import ObjectStore, plan_key
from callsight.dal.runs import running_check
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.errors import CallFailed
from callsight.models import ChunkTask
from callsight.processes import CallStatus, Process

logger = Logger(child=True)

PENDING, PROCESSING, SUCCESS, FAILED = (s.value for s in CallStatus)
#: a chunk worker's outcome for a call it did not claim because its run is no longer recorded running
RUN_ENDED = "run_ended"
#: ... for a call that left processing while worked on (the end of its run failed it, or a duplicate delivery ended it)
ENDED_ELSEWHERE = "ended_elsewhere"

#: Map items (chunks) per run at most. The state carries the chunks' S3 keys (~60 bytes each) and an
#: inline Map logs ~5 history events per item: 2,000 keep a run under ~120 KB of the 256 KiB payload
#: limit and ~10,000 of the 25,000 events, whatever the range holds (10,000 calls make 834 chunks of 12).
MAX_CHUNKS = 2000

#: a step's work on one call (its key, and its item as read when the chunk began): the attributes to store
Work = Callable[[CallKey, dict[str, Any]], dict[str, Any]]


def needs_transcript(call: dict[str, Any]) -> bool:
    """Calls whose recording is in S3."""
    return call.get("sync_status") == SUCCESS and bool(call.get("recording_key")) and not call.get("sync_skip")


def needs_analysis(call: dict[str, Any]) -> bool:
    """Calls with a transcript."""
    return call.get("transcribe_status") == SUCCESS and bool(call.get("transcript_key"))


def needs_report(call: dict[str, Any]) -> bool:
    """Calls with an analysis: their recommendations go into the range's report."""
    return call.get("analyze_status") == SUCCESS and isinstance(call.get("analysis"), dict)


ELIGIBLE: dict[str, Callable[[dict[str, Any]], bool]] = {
    Process.TRANSCRIBE.value: needs_transcript,
    Process.ANALYZE.value: needs_analysis,
    Process.RECOMMENDATIONS.value: needs_report,
}


def plan_calls(calls: CallRepository, store: ObjectStore, *, process: str, days: DateRange, run_id: str,
               force: bool, eligible: Callable[[dict[str, Any]], bool], chunk_size: int,
               max_chunks: int = MAX_CHUNKS, weigh: Callable[[dict[str, Any]], int] | None = None,
               budget: int = 0) -> dict[str, Any]:
    """Put the range's calls that need ``process`` in ``pending``; write them to S3 in chunks of
    ``chunk_size`` calls, or larger ones when that would make more than ``max_chunks``.

    With ``weigh``, a chunk is instead cut where its calls' weights (say, the tokens of a prompt) would
    pass ``budget`` (a heavier call has a chunk of its own), again never more than ``max_chunks``."""
    attr = status_attr(process)
    wanted = [item for item in calls.in_range(days) if eligible(item)]
    movable = [item for item in wanted if item.get(attr) in (None, FAILED, PROCESSING)
               or (force and item.get(attr) == SUCCESS)]
    moved_keys = set(calls.transition_many(process, ((CallKey.from_sk(item["sk"]), item.get(attr)) for item in movable),
                                           PENDING, remove=[f"{process}_error"]))
    moved = Counter(str(item.get(attr)) for item in movable if CallKey.from_sk(item["sk"]) in moved_keys)
    # a call that changed meanwhile (not moved) is left to a later run
    pending = [item for item in wanted if item.get(attr) == PENDING or CallKey.from_sk(item["sk"]) in moved_keys]
    chunks = []
    for number, chunk in enumerate(_chunked(pending, chunk_size, max_chunks, weigh, budget)):
        key = plan_key(calls.client_id, run_id, f"{process}-{number:05d}")
        store.put_json(key, [{"sk": item["sk"]} for item in chunk])
        chunks.append(key)
    planned = {"planned": len(pending), "new": moved["None"], "retried_failed": moved[FAILED],
               "recovered_processing": moved[PROCESSING], "forced": moved[SUCCESS], "chunks": len(chunks)}
    logger.info("calls planned", extra={"step": process, **planned})
    return {"chunks": chunks, "planned": planned}


def _chunked(items: list[dict[str, Any]], size: int, max_chunks: int, weigh: Callable[[dict[str, Any]], int] | None,
             budget: int) -> list[list[dict[str, Any]]]:
    if weigh is None:
        size = max(size, -(-len(items) // max_chunks))  # a huge range gets larger chunks, never more of them
        return [items[i:i + size] for i in range(0, len(items), size)]
    weights = [max(1, weigh(item)) for item in items]
    # two neighbouring chunks always weigh more than the budget, so 2 x total / budget bounds their number
    budget = max(budget, -(-2 * sum(weights) // max_chunks))
    chunks: list[list[dict[str, Any]]] = []
    load = 0
    for item, weight in zip(items, weights, strict=True):
        if not chunks or load + weight > budget:
            chunks.append([])
            load = 0
        chunks[-1].append(item)
        load += weight
    return chunks


class ChunkWorker:
    """Works through one chunk, ``concurrency`` calls at a time; each call ends success or failed.

    ``days``: the run's range. A claim then holds only while the range's run is ``run_id`` and recorded running;
    without it (a task invoked by hand, outside any run) claims are not tied to a run."""

    def __init__(self, *, process: str, run_id: str, calls: CallRepository, concurrency: int,
                 work: Work, days: DateRange | None = None) -> None:
        self.process = process
        self.run_id = run_id
        self.calls = calls
        self.concurrency = concurrency
        self.work = work
        self.claim_guard = running_check(calls.client_id, process, days, run_id) if days else None
        self._run_ended = threading.Event()

    def run(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        keys = [CallKey.from_sk(entry["sk"]) for entry in entries]
        found = self.calls.get_many(keys)  # the calls' fields (recording, transcript...) do not change in a run
        with ThreadPoolExecutor(self.concurrency) as pool:
            outcomes = Counter(pool.map(lambda key: self.process_one(key, found.get(key.sk)), keys))
        if outcomes[RUN_ENDED]:
            logger.warning("the run is no longer running: calls left pending",
                           extra={"step": self.process, "left_pending": outcomes[RUN_ENDED]})
        return {"succeeded": outcomes[SUCCESS], "failed": outcomes[FAILED], "not_pending": outcomes["not_pending"],
                RUN_ENDED: outcomes[RUN_ENDED], ENDED_ELSEWHERE: outcomes[ENDED_ELSEWHERE]}

    def process_one(self, key: CallKey, call: dict[str, Any] | None) -> str:
        if self._run_ended.is_set():
            return RUN_ENDED
        run_attr = f"{self.process}_run"
        if not self.calls.transition(key, self.process, PENDING, PROCESSING, set_attrs={run_attr: self.run_id},
                                     guard=self.claim_guard):
            current = self.calls.get(key) or {}
            status = current.get(status_attr(self.process))
            if status == PENDING and self.claim_guard is not None:  # the call is free: the run's check failed
                self._run_ended.set()
                return RUN_ENDED
            if status != PROCESSING or current.get(run_attr) != self.run_id:
                return "not_pending"
        try:
            if call is None:
                raise CallFailed("the call is no longer stored")
            result = self.work(key, call)
        except CallFailed as exc:
            return self._fail(key, str(exc))
        except Exception as exc:  # one call's surprise must not leave it processing or sink its chunk
            logger.exception("call failed unexpectedly", extra={"step": self.process, "call": key.sk})
            return self._fail(key, f"{type(exc).__name__}: {exc}"[:500])
        ended = self.calls.transition(key, self.process, PROCESSING, SUCCESS, set_attrs=result,
                                      remove=[f"{self.process}_error"])
        return SUCCESS if ended else ENDED_ELSEWHERE

    def _fail(self, key: CallKey, reason: str) -> str:
        ended = self.calls.transition(key, self.process, PROCESSING, FAILED,
                                      set_attrs={f"{self.process}_error": reason})
        return FAILED if ended else ENDED_ELSEWHERE


def run_chunk(task: ChunkTask, *, table: Table, store: ObjectStore, concurrency: int,
              work_for: Callable[[CallRepository], Work]) -> dict[str, int]:
    """A worker task's whole job: the chunk ``task.chunk_key`` of the client's run of ``task.process``."""
    calls = CallRepository(table, task.client_id)
    worker = ChunkWorker(process=task.process.value, run_id=task.run_id, calls=calls, concurrency=concurrency,
                         work=work_for(calls), days=task.range)
    result = worker.run(store.get_json(task.chunk_key))
    logger.info("chunk done", extra={"step": task.process.value, **result})
    return result
