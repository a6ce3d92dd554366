"""What every per-call process shares: planning the calls of a range, and working through a chunk.

Planning puts each call that needs the step in ``pending`` (a call new to the process joins its
total; ``failed`` and orphaned ``processing`` calls go back to ``pending``; with ``force``, so do
successes) and writes the pending calls to S3 in chunks, which the state machine fans out.

A chunk worker reads its calls in one BatchGetItem, claims each (``pending -> processing``, counted
once), does the work on the call as read, and ends it ``success`` or ``failed`` with the reason. A
retried delivery of the same run takes back the calls it had claimed; any other duplicate finds them
taken and leaves them alone. A claim holds only while the run is recorded running (a ConditionCheck
on the run in the claim's transaction): once a stopped or ended run is recorded finished, its workers
still in flight claim nothing more and leave the rest of their chunk pending. A worker near its Lambda
timeout claims nothing more either: the calls it did not start end ``failed`` (not started: out of time).

A chunk whose worker dies (timeout, out of memory, a crash: Step Functions catches it after the task's retries)
is closed by :func:`fail_chunk`: each of its calls still pending, or processing for this run, ends ``failed``
with the reason the worker died, so the run goes on and ends ``partial``, never ``failed`` for one chunk.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger

from callsight.dal.calls import CallKey, CallRepository, status_attr
from callsight.dal.recordings import ObjectStore, plan_key
from callsight.dal.runs import running_check
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.errors import CallFailed
from callsight.models import ChunkTask, TaskError
from callsight.processes import CallStatus, Process

logger = Logger(child=True)

PENDING, PROCESSING, SUCCESS, FAILED = (s.value for s in CallStatus)
#: a chunk worker's outcome for a call it did not claim because its run is no longer recorded running
RUN_ENDED = "run_ended"
#: ... for a call that left processing while worked on (the end of its run failed it, or a duplicate delivery ended it)
ENDED_ELSEWHERE = "ended_elsewhere"
#: ... for a call it did not start because too little of its Lambda timeout was left (the call ends failed)
OUT_OF_TIME = "out_of_time"
#: what a call ends with when its worker stopped claiming near its timeout
NOT_STARTED_REASON = ("not started: the worker ran out of time (under {margin:g} s of its timeout left); "
                      "run the process again to retry this call")

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
               budget: int = 0, weighed_chunk_size: int | None = None) -> dict[str, Any]:
    """Put the range's calls that need ``process`` in ``pending``; write them to S3 in chunks of
    ``chunk_size`` calls, or larger ones when that would make more than ``max_chunks``.

    With ``weigh``, a chunk is instead cut where its calls' weights (say, the tokens of a prompt, or the seconds
    of audio) would pass ``budget`` (a heavier call has a chunk of its own), and, with ``weighed_chunk_size``,
    also at that many calls; again never more than ``max_chunks`` (the limits grow instead)."""
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
    for number, chunk in enumerate(_chunked(pending, chunk_size, max_chunks, weigh, budget,
                                            weighed_size=weighed_chunk_size)):
        key = plan_key(calls.client_id, run_id, f"{process}-{number:05d}")
        store.put_json(key, [{"sk": item["sk"]} for item in chunk])
        chunks.append(key)
    planned = {"planned": len(pending), "new": moved["None"], "retried_failed": moved[FAILED],
               "recovered_processing": moved[PROCESSING], "forced": moved[SUCCESS], "chunks": len(chunks)}
    logger.info("calls planned", extra={"step": process, **planned})
    return {"chunks": chunks, "planned": planned}


def audio_seconds(call: dict[str, Any]) -> int:
    """A call's recording length as amoCRM reported it (whole seconds; 0 when unknown): the transcription's weight."""
    duration = call.get("duration")  # a Decimal as DynamoDB returns numbers
    return int(duration) if isinstance(duration, (int, float, Decimal)) and not isinstance(duration, bool) else 0


def _chunked(items: list[dict[str, Any]], size: int, max_chunks: int, weigh: Callable[[dict[str, Any]], int] | None,
             budget: int, *, weighed_size: int | None) -> list[list[dict[str, Any]]]:
    if weigh is None:
        size = max(size, -(-len(items) // max_chunks))  # a huge range gets larger chunks, never more of them
        return [items[i:i + size] for i in range(0, len(items), size)]
    weights = [max(1, weigh(item)) for item in items]
    # two neighbouring chunks always weigh more than the budget, so 2 x total / budget bounds their number
    budget = max(budget, -(-2 * sum(weights) // max_chunks))
    limit = weighed_size or len(items) or 1
    while True:
        chunks: list[list[dict[str, Any]]] = []
        load = 0
        for item, weight in zip(items, weights, strict=True):
            if not chunks or load + weight > budget or len(chunks[-1]) >= limit:
                chunks.append([])
                load = 0
            chunks[-1].append(item)
            load += weight
        if len(chunks) <= max_chunks:
            return chunks
        budget, limit = budget * 2, limit * 2  # only with a calls limit too: then both grow


class ChunkWorker:
    """Works through one chunk, ``concurrency`` calls at a time; each call ends success or failed.

    ``days``: the run's range. A claim then holds only while the range's run is ``run_id`` and recorded running;
    without it (a task invoked by hand, outside any run) claims are not tied to a run.

    ``remaining_ms`` (the Lambda context's ``get_remaining_time_in_millis``): once less than ``margin_seconds`` is
    left, no call is claimed any more; the calls not started end ``failed`` saying so, so the task answers before
    Lambda stops it (a stopped task's calls would wait for the chunk's death to be handled). The margin is never
    more than a quarter of the time the task had when it began (a short timeout still gets work done)."""

    def __init__(self, *, process: str, run_id: str, calls: CallRepository, concurrency: int,
                 work: Work, days: DateRange | None = None, remaining_ms: Callable[[], int] | None = None,
                 margin_seconds: float = 0.0) -> None:
        self.process = process
        self.run_id = run_id
        self.calls = calls
        self.concurrency = concurrency
        self.work = work
        self.claim_guard = running_check(calls.client_id, process, days, run_id) if days else None
        self._run_ended = threading.Event()
        self.remaining_ms = remaining_ms
        self.margin_seconds = margin_seconds
        self._margin_ms = margin_seconds * 1000
        self._out_of_time = threading.Event()

    def run(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        if self.remaining_ms is not None:
            self._margin_ms = min(self.margin_seconds * 1000, self.remaining_ms() / 4)
        keys = [CallKey.from_sk(entry["sk"]) for entry in entries]
        found = self.calls.get_many(keys)  # the calls' fields (recording, transcript...) do not change in a run
        with ThreadPoolExecutor(self.concurrency) as pool:
            outcomes = Counter(pool.map(lambda key: self.process_one(key, found.get(key.sk)), keys))
        if outcomes[RUN_ENDED]:
            logger.warning("the run is no longer running: calls left pending",
                           extra={"step": self.process, "left_pending": outcomes[RUN_ENDED]})
        if outcomes[OUT_OF_TIME]:
            logger.warning("the worker ran out of time: calls not started failed",
                           extra={"step": self.process, "not_started": outcomes[OUT_OF_TIME]})
        return {"succeeded": outcomes[SUCCESS], "failed": outcomes[FAILED] + outcomes[OUT_OF_TIME],
                "not_pending": outcomes["not_pending"], RUN_ENDED: outcomes[RUN_ENDED],
                ENDED_ELSEWHERE: outcomes[ENDED_ELSEWHERE], OUT_OF_TIME: outcomes[OUT_OF_TIME]}

    def _time_is_up(self) -> bool:
        if self._out_of_time.is_set():
            return True
        if self.remaining_ms is not None and self.remaining_ms() < self._margin_ms:
            self._out_of_time.set()
            return True
        return False

    def process_one(self, key: CallKey, call: dict[str, Any] | None) -> str:
        if self._run_ended.is_set():
            return RUN_ENDED
        if self._time_is_up():
            return self._not_started(key, call)
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

    def _not_started(self, key: CallKey, call: dict[str, Any] | None) -> str:
        reason = NOT_STARTED_REASON.format(margin=round(self._margin_ms / 1000, 1))
        ended = end_unfinished(self.calls, key, self.process, self.run_id, reason, guard=self.claim_guard,
                               current=call)  # as the chunk's one read found it
        if ended == LEFT_PENDING:  # the run's check failed
            self._run_ended.set()
            return RUN_ENDED
        return OUT_OF_TIME if ended == FAILED else "not_pending"


#: what ``end_unfinished`` left a call as, besides ``failed`` (it failed it)
ALREADY_ENDED, OTHER_RUN, LEFT_PENDING, NOT_STORED = "already_ended", "other_run", "left_pending", "not_stored"


def end_unfinished(calls: CallRepository, key: CallKey, process: str, run_id: str, reason: str, *,
                   guard: dict[str, Any] | None, current: dict[str, Any] | None = None) -> str:
    """Fail one call of a chunk that will not be worked on: pending (while ``guard``, the run's running check,
    holds), or processing for ``run_id``; each a conditional transition, counted once. Returns ``failed`` when
    this failed it, else why it left the call alone: ``already_ended`` (success or failed), ``other_run``
    (processing for another run), ``left_pending`` (the guard failed), ``not_stored``. ``current``: the call as
    already read."""
    attr, run_attr = status_attr(process), f"{process}_run"
    error = {f"{process}_error": reason}
    for _ in range(3):  # a call that moved between the read and the write is read again
        current = calls.get(key) if current is None else current
        if current is None:
            return NOT_STORED
        status = current.get(attr)
        if status == PENDING:
            moved = calls.transition(key, process, PENDING, FAILED, set_attrs=error, guard=guard)
        elif status == PROCESSING and current.get(run_attr) == run_id:
            moved = calls.transition(key, process, PROCESSING, FAILED, set_attrs=error, of_run=run_id)
        else:
            return OTHER_RUN if status == PROCESSING else ALREADY_ENDED
        if moved:
            return FAILED
        was, current = status, calls.get(key)
        if was == PENDING and current is not None and current.get(attr) == PENDING:
            return LEFT_PENDING  # still pending: the guard failed (the run is no longer recorded running)
    return LEFT_PENDING  # it kept moving: left to the end of the run


# ------------------------------------------------------------------------------------------ a chunk that died
#: Lambda's and Step Functions' names for a task whose worker was stopped, and what each means for its calls
_TIMEOUTS = {"Sandbox.Timedout", "States.Timeout"}
_OUT_OF_MEMORY = "Runtime.OutOfMemory"
_EXITED = "Runtime.ExitError"
#: Step Functions' name for a Lambda invocation that ended without an error body (older runtimes' timeout or OOM)
_UNKNOWN = "Lambda.Unknown"
_RETRY = "run the process again to retry this call"
_TIMED_OUT_AFTER = re.compile(r"timed out after (\d+(?:\.\d+)?) seconds")
#: Lambda's messages begin with the request id, which says nothing to a person reading a call's error
_REQUEST_ID = re.compile(r"^RequestId: \S+ Error: ")
_EXITED_WITH = "Runtime exited with error: "
#: a link's path and query may carry a token: a crash message keeps only the scheme and host
_URL_TAIL = re.compile(r"(https?://[^/\s'\"?#]+)[^\s'\"]*")
_MESSAGE_CHARS = 200


def death_reason(error: TaskError) -> str:
    """The reason a dead worker's calls end with, from the Catch result (``Error``, and ``Cause``: for a Lambda
    error its JSON body with ``errorType`` and ``errorMessage``)."""
    name = error.error
    message = _URL_TAIL.sub(r"\1/...", _REQUEST_ID.sub("", _cause_message(error.cause)))
    if name in _TIMEOUTS:
        after = _TIMED_OUT_AFTER.search(message)
        limit = f"after its {float(after.group(1)):g} s timeout" if after else "at its timeout"
        return f"the worker was stopped {limit} ({name}); {_RETRY}"
    if name == _OUT_OF_MEMORY:
        return (f"the worker ran out of memory ({name}); {_RETRY}, and raise the function's MemorySize "
                "if it fails again")
    if name == _UNKNOWN:
        return f"the worker ended without an answer ({name}: out of memory or its timeout, likely); {_RETRY}"
    detail = message.removeprefix(_EXITED_WITH)[:_MESSAGE_CHARS] if name == _EXITED else message[:_MESSAGE_CHARS]
    said = f"{name}: {detail}" if detail else name
    if name == _EXITED:
        return f"the worker's runtime exited ({said}); {_RETRY}"
    return f"the worker crashed: {said}; {_RETRY}"


def _cause_message(cause: str | None) -> str:
    if not cause:
        return ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict):
        return str(parsed.get("errorMessage") or "")
    return cause


def fail_chunk(task: ChunkTask, error: TaskError, *, table: Table, store: ObjectStore) -> dict[str, int]:
    """A dead worker's chunk: each call still pending, or processing for this run, ends ``failed`` with the reason
    (one conditional transition each: counters stay exact). Calls the chunk already ended, and calls another run
    took, are left alone; a second delivery finds nothing more to do. A pending call is failed only while the run
    is recorded running (after that it is left for the next run, as a stopped run's worker leaves it)."""
    calls = CallRepository(table, task.client_id)
    process, reason = task.process.value, death_reason(error)
    keys = [CallKey.from_sk(entry["sk"]) for entry in store.get_json(task.chunk_key)]
    found = calls.get_many(keys)
    guard = running_check(task.client_id, process, task.range, task.run_id)
    outcomes = Counter(end_unfinished(calls, key, process, task.run_id, reason, guard=guard, current=found.get(key.sk))
                       for key in keys)
    result = {name: outcomes[name] for name in (FAILED, ALREADY_ENDED, OTHER_RUN, LEFT_PENDING, NOT_STORED)}
    logger.warning("a worker died: its chunk's calls failed", extra={"step": process, "error": error.error,
                                                                     "reason": reason, **result})
    return result


def run_chunk(task: ChunkTask, *, table: Table, store: ObjectStore, concurrency: int,
              work_for: Callable[[CallRepository], Work], remaining_ms: Callable[[], int] | None = None,
              margin_seconds: float = 0.0) -> dict[str, int]:
    """A worker task's whole job: the chunk ``task.chunk_key`` of the client's run of ``task.process``.

    ``remaining_ms``: the Lambda context's ``get_remaining_time_in_millis``; no call is started with less than
    ``margin_seconds`` left (see :class:`ChunkWorker`)."""
    calls = CallRepository(table, task.client_id)
    worker = ChunkWorker(process=task.process.value, run_id=task.run_id, calls=calls, concurrency=concurrency,
                         work=work_for(calls), days=task.range, remaining_ms=remaining_ms,
                         margin_seconds=margin_seconds)
    result = worker.run(store.get_json(task.chunk_key))
    logger.info("chunk done", extra={"step": task.process.value, **result})
    return result
