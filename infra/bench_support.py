"""Helpers of ``infra.bench``: seeding calls the way the pipeline stores them, counting DynamoDB reads (on
moto's side), timing the stub, running a process over HTTP, and reading a Step Functions history.

Nothing here is measured by itself: it prepares the platform and collects what ``infra.bench`` prints.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from moto.dynamodb.responses import DynamoHandler
from pydantic import SecretStr

from callsight.admin import register_client
from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.clients import AmoCrmCredentials, ClientProfile
from callsight.dal.recordings import recording_key, transcript_key
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.runs import execution_arn
from callsight.logic.sync import call_from_note
from callsight.processes import Process
from infra.platform import LocalPlatform
from infra.stubs.audio import make_wav
from infra.stubs.clinic_calls import ADMINISTRATORS, DemoCall, generate_calls, to_note

log = logging.getLogger("infra.bench")

FINISHED = ("completed", "partial", "failed")
TZ = "Europe/Moscow"
#: Step Functions quotas (standard workflows)
HISTORY_EVENT_LIMIT = 25_000
PAYLOAD_LIMIT_BYTES = 256 * 1024


# ---------------------------------------------------------------------------------------------- numbers
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def days_back(days: int, tz: str = TZ) -> DateRange:
    """``days`` local calendar days ending today (inclusive)."""
    today = datetime.now(ZoneInfo(tz)).date()
    return DateRange(today - timedelta(days=days - 1), today)


# ---------------------------------------------------------------------------------------------- seeding
def register_clinic(platform: LocalPlatform, client_id: str, *, tz: str = TZ) -> None:
    """A clinic on the stub amoCRM, registered as an operator does (tests/api/conftest.py ``new_client``)."""
    from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN

    register_client(
        ClientProfile(client_id=client_id, amocrm_subdomain="demo", amocrm_base_url=platform.amocrm.url, timezone=tz),
        AmoCrmCredentials(access_token=SecretStr(DEFAULT_ACCESS_TOKEN)),
        table_name=platform.table_name, secret_prefix=platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])


def min_recording_seconds(platform: LocalPlatform) -> int:
    return int(float(platform.template.parameters.get("MinRecordingSeconds", "10")))


def synced_items(demo_calls: Iterable[DemoCall], *, client_id: str, days: DateRange, base_url: str,
                 min_seconds: int, tz: str = TZ) -> list[tuple[dict[str, Any], DemoCall]]:
    """The call items a finished sync stores for these amoCRM notes (same ``call_from_note``): skipped calls
    with their reason, the others ``success`` with their recording's key in S3. Calls outside ``days`` are left
    out, as the sync leaves them."""
    users = {admin.id: admin.name for admin in ADMINISTRATORS}
    start, end = days.bounds(tz)
    out: list[tuple[dict[str, Any], DemoCall]] = []
    for demo in demo_calls:
        if not start <= demo.created_at < end:
            continue
        note = {**to_note(demo, base_url), "entity_type": demo.entity_type}
        call = call_from_note(note, client_id=client_id, tz=tz, min_seconds=min_seconds, users=users)
        if not call.get("sync_skip"):
            call["sync_status"] = "success"
            call["recording_key"] = recording_key(client_id, call["day"], call["call_id"], "wav")
            call["recording_content_type"] = "audio/wav"
        out.append((call, demo))
    return out


def seed_synced(platform: LocalPlatform, client_id: str, items: list[tuple[dict[str, Any], DemoCall]], *,
                threads: int = 4) -> dict[str, int]:
    """Store the items through the DAL (``insert_many("sync", ...)``: items and the sync's day counters, as the
    sync's own inserts) and a recording of each in S3: the stub's 6-second WAV of the call (``make_wav``), not its
    full-length MP3/OGG, so these benchmarks measure the platform per call, not splitting (``long-recording`` does)."""
    s3 = platform.boto3_client("s3")
    bucket = platform.env["CALLSIGHT_BUCKET"]

    def upload(pair: tuple[dict[str, Any], DemoCall]) -> int:
        call, demo = pair
        data = make_wav(demo)
        s3.put_object(Bucket=bucket, Key=call["recording_key"], Body=data, ContentType="audio/wav")
        call["recording_bytes"] = len(data)
        return len(data)

    recorded = [pair for pair in items if pair[0].get("recording_key")]
    with ThreadPoolExecutor(threads) as pool:
        sizes = list(pool.map(upload, recorded))
    inserted = CallRepository(Table(platform.table_name), client_id).insert_many("sync", [c for c, _ in items])
    return {"calls": inserted, "recordings": len(recorded), "recording_bytes": sum(sizes)}


def seed_transcription_snapshot(platform: LocalPlatform, client_id: str, calls: int, days: DateRange, *,
                                seed: int = 7, transitions: int = 50) -> Counter[str]:
    """``calls`` recorded calls of ``days`` in the middle of a transcription run, through the DAL: inserted with
    their transcription status (``insert_many("transcribe", ...)`` counts each under its status, as the pipeline's
    transitions would have), ``transitions`` of them then moved pending -> processing -> success/failed with
    ``transition`` (the workers' path), and the run recorded as running. Returns the statuses stored."""
    rng = random.Random(f"bench-status:{seed}:{calls}")
    # the demo data's share of recorded, long-enough calls is ~60 %: draw enough notes, keep ``calls`` of them
    demo = generate_calls(int(calls * 1.9) + 60, days=(days.end - days.start).days + 1, seed=seed)
    items = [c for c, _ in synced_items(demo, client_id=client_id, days=days, base_url=platform.amocrm.url,
                                        min_seconds=min_recording_seconds(platform))
             if c.get("recording_key")]
    if len(items) < calls:
        raise RuntimeError(f"only {len(items)} recorded demo calls in the range, {calls} wanted")
    items = sorted(rng.sample(items, calls), key=lambda c: str(c["call_time"]))
    weights = {"success": 0.70, "failed": 0.04, "processing": 0.06, "pending": 0.20}
    run_id = f"{client_id}-transcribe-bench"
    for call in items:
        call["transcribe_status"] = rng.choices(list(weights), list(weights.values()))[0]
        if call["transcribe_status"] == "success":
            call["transcript_key"] = transcript_key(client_id, call["day"], call["call_id"])
        elif call["transcribe_status"] == "failed":
            call["transcribe_error"] = "transcription failed: HTTP 500 stub fault"
        if call["transcribe_status"] != "pending":
            call["transcribe_run"] = run_id
    table = Table(platform.table_name)
    repo = CallRepository(table, client_id)
    repo.insert_many("transcribe", items)
    pending = [c for c in items if c["transcribe_status"] == "pending"]
    for call in pending[:min(transitions, len(pending) // 4)]:
        key = CallKey(call["day"], call["call_id"])
        repo.transition(key, "transcribe", "pending", "processing", set_attrs={"transcribe_run": run_id})
        to = "failed" if rng.random() < 0.05 else "success"
        repo.transition(key, "transcribe", "processing", to)
        call["transcribe_status"] = to
    machine = platform.state_machine_arn("transcribe")
    RunRepository(table).started(client_id, "transcribe", days, execution_name=run_id,
                                 execution_arn=execution_arn(machine, run_id))
    return Counter(str(c["transcribe_status"]) for c in items)


def seed_analysed(platform: LocalPlatform, client_id: str, calls: int, days: DateRange, *, seed: int = 11) -> int:
    """``calls`` recorded demo calls of ``days`` as a finished analysis leaves them, through the DAL: each with
    the analysis the stub OpenAI gives its dialogue (the same function that answers the analysis prompts), the
    calls inserted with ``insert_many("analyze", ...)`` (counted as analysed). Returns the calls stored."""
    from infra.stubs.openai import analyze_transcript

    demo = generate_calls(int(calls * 1.9) + 60, days=(days.end - days.start).days + 1, seed=seed)
    pairs = [(c, d) for c, d in synced_items(demo, client_id=client_id, days=days, base_url=platform.amocrm.url,
                                             min_seconds=min_recording_seconds(platform))
             if c.get("recording_key") and d.scenario is not None]
    if len(pairs) < calls:
        raise RuntimeError(f"only {len(pairs)} recorded demo calls in the range, {calls} wanted")
    items = []
    for call, call_demo in random.Random(seed).sample(pairs, calls):
        assert call_demo.scenario is not None
        analysis = analyze_transcript(f"Расшифровка:\n{call_demo.scenario.labelled_transcript()}")
        call.update({"transcribe_status": "success", "analyze_status": "success",
                     "transcript_key": transcript_key(client_id, call["day"], call["call_id"]), "analysis": analysis,
                     "call_type": analysis["call_type"], "booked": analysis["outcome"]["booked"],
                     "overall_score": analysis["overall_score"], "patient_sentiment": analysis["patient_sentiment"],
                     "analysis_model": "stub"})
        items.append(call)
    return CallRepository(Table(platform.table_name), client_id).insert_many("analyze", items)


# ---------------------------------------------------------------------------------------------- DynamoDB reads
def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """A wire-format item's size (``{"name": {"S": ...}}``) by DynamoDB's rules: UTF-8 names and strings,
    numbers 1 byte per 2 significant digits + 1, binaries their bytes, 3 bytes + 1 per element of a map or list."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _number_size(text: str) -> int:
    digits = text.lstrip("+-").replace(".", "").lower().partition("e")[0].strip("0")
    return (max(1, len(digits)) + 1) // 2 + 1


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, v),) = value.items()
    sizes: dict[str, Callable[[Any], int]] = {
        "S": lambda x: len(x.encode()), "N": _number_size, "B": lambda x: len(base64.b64decode(x)),
        "BOOL": lambda x: 1, "NULL": lambda x: 1,
        "SS": lambda x: sum(len(e.encode()) for e in x), "NS": lambda x: sum(_number_size(e) for e in x),
        "BS": lambda x: sum(len(base64.b64decode(e)) for e in x),
        "M": lambda x: 3 + sum(1 + len(k.encode()) + _value_size(e) for k, e in x.items()),
        "L": lambda x: 3 + sum(1 + _value_size(e) for e in x),
    }
    return sizes[kind](v)


def read_units(size: int, consistent: bool) -> float:
    """Read capacity of reading ``size`` bytes: 4 KB units, rounded up, at least one; eventually consistent: half."""
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def _as_json(value: Any) -> dict[str, Any]:
    parsed = value if isinstance(value, dict) else json.loads(value or "{}")
    return dict(parsed)


#: the read operations whose answers are counted (items, bytes, capacity); other requests are only counted
_READS = ("GetItem", "Query", "Scan", "BatchGetItem")


@dataclass
class ReadCost:
    requests: Counter[str] = field(default_factory=Counter)
    items: int = 0
    item_bytes: int = 0
    capacity_units: float = 0.0


class DynamoReadMeter:
    """Counts, on moto's side, every DynamoDB request the moto server of this process answers (from any
    process: the handlers run in containers), and for the reads the items and bytes returned and the read
    capacity DynamoDB would charge: GetItem and Query/Scan by 4 KB units of the answer, BatchGetItem per item,
    rounded up; eventually consistent reads half.

    It wraps ``DynamoHandler.call_action`` (the method every DynamoDB request of the server goes through,
    which ``infra.aws`` patches with its lock): the request's JSON and the answer's. It cannot tell who sent a
    request: use it in a pass where only the requests measured run. ``take()`` returns what was counted since
    the last take.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cost = ReadCost()
        self._saved: Any = None

    def __enter__(self) -> DynamoReadMeter:
        self._saved = vars(DynamoHandler).get("call_action")
        original = DynamoHandler.call_action
        meter = self

        def call_action(handler: Any) -> Any:
            answer = original(handler)
            try:
                meter._count(handler._get_action(), handler.body, answer)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a bench must not break the request
                log.warning("DynamoReadMeter: request not counted: %s", exc)
            return answer

        DynamoHandler.call_action = call_action  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            del DynamoHandler.call_action
        else:
            DynamoHandler.call_action = self._saved  # type: ignore[method-assign]

    def _count(self, operation: str, body: Any, answer: Any) -> None:
        status, _, response = answer
        if int(status) != 200:
            with self._lock:
                self._cost.requests[f"{operation} (HTTP {status})"] += 1
            return
        request = _as_json(body)  # moto's DynamoHandler has replaced the body by its parsed parameters
        result = _as_json(response) if operation in _READS else {}
        sizes: list[int] = []
        units = 0.0
        if operation == "GetItem":
            sizes = [item_size(result["Item"])] if result.get("Item") else []
            units = read_units(sum(sizes), bool(request.get("ConsistentRead")))
        elif operation in ("Query", "Scan"):
            sizes = [item_size(item) for item in result.get("Items") or []]
            units = read_units(sum(sizes), bool(request.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, items in (result.get("Responses") or {}).items():
                consistent = bool(request["RequestItems"].get(table, {}).get("ConsistentRead"))
                table_sizes = [item_size(item) for item in items]
                sizes += table_sizes
                units += sum(read_units(size, consistent) for size in table_sizes)
        with self._lock:
            self._cost.requests[operation] += 1
            self._cost.items += len(sizes)
            self._cost.item_bytes += sum(sizes)
            self._cost.capacity_units += units

    def take(self) -> ReadCost:
        with self._lock:
            cost, self._cost = self._cost, ReadCost()
        return cost


# ---------------------------------------------------------------------------------------------- timing
class Durations:
    """Thread-safe list of (start, duration) pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        with self._lock:
            self.values.append(seconds)

    def take(self) -> list[float]:
        with self._lock:
            values, self.values = self.values, []
        return values


@contextlib.contextmanager
def timed_method(owner: Any, name: str, sink: Durations) -> Iterator[None]:
    """Time every call of ``owner.name`` (an instance or a class attribute) into ``sink``; restored after."""
    original = getattr(owner, name)
    had_own = name in vars(owner)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.add(time.perf_counter() - began)

    if isinstance(owner, type):  # a class: keep it a method
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                sink.add(time.perf_counter() - began)

        setattr(owner, name, method)
    else:
        setattr(owner, name, wrapper)
    try:
        yield
    finally:
        if isinstance(owner, type) or had_own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


# ---------------------------------------------------------------------------------------------- processes
@dataclass
class ProcessRun:
    status: dict[str, Any]
    wall_s: float  # the start request to the first status poll that saw the run finished
    execution_s: float | None  # the Step Functions execution's own start to stop
    execution_arn: str
    polls: int


def run_process(api: httpx.Client, platform: LocalPlatform, process: str, client_id: str, days: DateRange, *,
                force: bool = False, poll_seconds: float = 0.5, timeout_s: float = 7200,
                on_poll: Callable[[dict[str, Any]], None] | None = None) -> ProcessRun:
    """Start ``process`` over HTTP as the frontend does and poll its status endpoint to the end."""
    spec = Process(process).spec
    start_path, status_path = spec.start_path, spec.status_path
    query = {"client_id": client_id, "start_date": days.start.isoformat(), "end_date": days.end.isoformat()}
    body: dict[str, Any] = {**query, "force": force}
    if force:  # a force over ForceConfirmCalls calls is confirmed with the number it re-runs (the status's total)
        body["confirm_calls"] = api.get(status_path, params=query).json().get("total_calls")
    began = time.monotonic()
    answer = api.post(start_path, json=body)
    if answer.status_code not in (200, 202):
        raise RuntimeError(f"{process}: start refused: HTTP {answer.status_code} {answer.text}")
    name = answer.json()["execution_name"]
    polls = 0
    while True:
        status = api.get(status_path, params=query).json()
        polls += 1
        if on_poll is not None:
            on_poll(status)
        if status.get("overall_status") in FINISHED and status.get("execution_name") == name:
            break
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"{process}: not finished after {timeout_s:.0f} s: {status}")
        time.sleep(poll_seconds)
    wall = time.monotonic() - began
    arn = platform.execution_arn(process, name)
    sfn = platform.boto3_client("stepfunctions")
    execution_s = None
    for _ in range(100):  # the run is recorded finished a moment before the execution stops
        described = sfn.describe_execution(executionArn=arn)
        if described.get("stopDate"):
            execution_s = (described["stopDate"] - described["startDate"]).total_seconds()
            break
        time.sleep(0.1)
    return ProcessRun(dict(status), wall, execution_s, arn, polls)


@dataclass
class HistoryStats:
    events: int
    by_type: Counter[str]
    largest_bytes: int
    largest_where: str
    #: seconds from the first entry to the last exit of each top-level state (Map iterations' states excluded)
    phases: dict[str, float]


_PAYLOAD_FIELDS = ("input", "output", "parameters", "result", "cause", "error")


def history_stats(platform: LocalPlatform, arn: str) -> HistoryStats:
    """Every event of the execution's history (paginated), and its largest payload (input, output, task
    parameters or result, error cause) in UTF-8 bytes."""
    sfn = platform.boto3_client("stepfunctions")
    events = 0
    by_type: Counter[str] = Counter()
    largest, where = 0, ""
    entered: dict[str, datetime] = {}
    exited: dict[str, datetime] = {}
    depth = 0  # inside a Map iteration
    current = ""  # the state last entered
    for page in sfn.get_paginator("get_execution_history").paginate(
            executionArn=arn, PaginationConfig={"PageSize": 1000}):
        for event in page["events"]:
            events += 1
            kind = str(event["type"])
            by_type[kind] += 1
            depth += kind == "MapIterationStarted"
            depth -= kind in ("MapIterationSucceeded", "MapIterationFailed", "MapIterationAborted")
            if kind.endswith("StateEntered"):
                current = event["stateEnteredEventDetails"]["name"]
            if depth == 0 and kind.endswith("StateEntered"):
                entered.setdefault(current, event["timestamp"])
            elif depth == 0 and kind.endswith("StateExited"):
                exited[event["stateExitedEventDetails"]["name"]] = event["timestamp"]
            for key, details in event.items():
                if not key.endswith("EventDetails") or not isinstance(details, dict):
                    continue
                for name in _PAYLOAD_FIELDS:
                    value = details.get(name)
                    if isinstance(value, str):
                        size = len(value.encode())
                        if size > largest:
                            state = details.get("name") or current
                            largest, where = size, f"{name} of {kind} in {state}"
    phases = {name: (exited[name] - began).total_seconds() for name, began in entered.items() if name in exited}
    return HistoryStats(events, by_type, largest, where, phases)


def describe(status: dict[str, Any]) -> str:
    b = status.get("status_breakdown") or {}
    return (f"{status.get('overall_status')}: {status.get('total_calls')} calls, {b.get('success', 0)} success, "
            f"{b.get('failed', 0)} failed, {b.get('pending', 0) + b.get('processing', 0)} unfinished")


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def today(tz: str = TZ) -> date:
    return datetime.now(ZoneInfo(tz)).date()
