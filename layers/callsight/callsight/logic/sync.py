"""The sync process: amoCRM call notes -> stored calls -> recordings in S3.

Step 1 (one task) fetches every call note of the range and accounts for each one: it becomes a call, or it
is counted under a named reason (rejected by :mod:`callsight.amocrm.notes` with the field and the problem,
created outside the range, or the same call as another note: filed on several entities, or returned twice).
A call filed on several entities is stored once with the entities it was on. Storing is idempotent (a
re-sync never duplicates, an updated note updates) and the downloads are planned in chunks written to S3.
Step 2 (one task per chunk, fanned out by the state machine) downloads the recordings.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from callsight.amocrm import AmoCrmClient, RawNote
from callsight.amocrm.notes import CallNote, RejectedNote, parse_call_note, resolve_responsible
from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.clients import ClientProfile
from callsight.dal.recordings import ObjectStore
from callsight.dal.runs import RunRepository
from callsight.dates import DateRange, local_day, local_iso, utc_now_iso
from callsight.errors import AmoCrmError
from callsight.logic.steps import plan_calls
from callsight.processes import CallStatus, Process, SkipReason

logger = Logger(child=True)

SYNC = Process.SYNC.value
PENDING, SUCCESS = CallStatus.PENDING.value, CallStatus.SUCCESS.value
#: fields a re-sync may change; statuses change only through transitions
DESCRIPTIVE_FIELDS = (
    "call_time", "direction", "duration", "phone", "call_status", "call_result", "responsible_user_id",
    "administrator", "call_responsible", "recording_url", "uniq", "source", "amo_updated_at", "amo_created_at",
    "amo_note_id", "entity_type", "entity_id", "entities",
)
#: rejected notes named in the log at most (the counts are always complete)
LOGGED_REJECTS = 50
#: the entity whose note speaks for a call filed on several, all else equal
_ENTITY_RANK = {"leads": 0, "contacts": 1, "companies": 2, "customers": 3}


def call_id_of(note: CallNote) -> str:
    """A call's id, the same for each entity the call is filed on and on every re-sync: derived from the
    telephony's ``uniq``, else from the recording link and the call time, else the entity type and note id."""
    if note.params.uniq:
        return "call-" + _digest(f"uniq:{note.params.uniq}")
    if note.params.link:
        return "call-" + _digest(f"link:{note.params.link}@{note.created_at}")
    return f"{note.entity_type}-{note.id}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _speaks_for_the_call(note: CallNote) -> tuple[bool, int, int, int]:
    """Of a call's notes, the one with a recording, the earliest, on a lead before a contact...: the call's."""
    return note.params.link is None, note.created_at, _ENTITY_RANK.get(note.entity_type, 9), note.id


def _entity_order(entity: dict[str, Any]) -> tuple[int, str, int, int]:
    kind = str(entity.get("entity_type"))
    return _ENTITY_RANK.get(kind, 9), kind, int(entity.get("entity_id") or 0), int(entity.get("note_id") or 0)


def call_from_notes(notes: Sequence[CallNote], *, client_id: str, tz: str, min_seconds: int,
                    users: dict[int, str]) -> dict[str, Any]:
    """The stored call of one call's notes (one note, or the same call filed on several entities)."""
    note = min(notes, key=_speaks_for_the_call)
    params = note.params
    who = resolve_responsible(note, users)
    skip = None
    if not params.link:
        skip = SkipReason.NO_RECORDING.value
    elif params.duration < min_seconds:
        skip = SkipReason.TOO_SHORT.value
    entities = sorted(({"entity_type": n.entity_type, "entity_id": n.entity_id or 0, "note_id": n.id}
                       for n in notes), key=_entity_order)
    call: dict[str, Any] = {
        "client_id": client_id,
        "call_id": call_id_of(note),
        "day": local_day(note.created_at, tz).isoformat(),
        "call_time": local_iso(note.created_at, tz),
        "amo_note_id": note.id,
        "amo_created_at": note.created_at,
        "amo_updated_at": max(n.last_change for n in notes),
        "entity_type": note.entity_type,
        "entity_id": note.entity_id or 0,
        "entities": entities,
        "direction": note.direction,
        "duration": params.duration,
        "phone": params.phone,
        "call_status": params.call_status,
        "call_result": params.call_result,
        "call_responsible": params.call_responsible,
        "responsible_user_id": who.user_id,
        "administrator": who.name,
        "recording_url": params.link,
        "uniq": params.uniq or "",
        "source": params.source,
        "synced_at": utc_now_iso(),
        "sync_status": SUCCESS if skip else PENDING,
    }
    if skip:
        call["sync_skip"] = skip
    return {k: v for k, v in call.items() if v is not None}


def call_from_note(note: Any, *, client_id: str, tz: str, min_seconds: int, users: dict[int, str]) -> dict[str, Any]:
    """The stored call of one raw amoCRM note carrying its ``entity_type`` (default ``leads``); ValueError
    naming the reason and the problem when it is not a call note."""
    entity_type = str(note.get("entity_type") or "leads") if isinstance(note, dict) else "leads"
    parsed = parse_call_note(entity_type, note)
    if isinstance(parsed, RejectedNote):
        raise ValueError(f"{parsed.reason}: {parsed.problem}")
    return call_from_notes([parsed], client_id=client_id, tz=tz, min_seconds=min_seconds, users=users)


@dataclass
class NoteAccount:
    """What became of every note the API returned:
    ``scanned == calls_in_range + duplicates_merged + repeated_notes + out_of_range + sum(rejected)``."""

    scanned: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: notes of a call already counted (the same call filed on another entity)
    duplicates_merged: int = 0
    #: the same note (entity type and id) returned again, e.g. by pages that shifted
    repeated_notes: int = 0
    #: notes whose call time is outside the range (the API selects by update time)
    out_of_range: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_notes: list[RejectedNote] = field(default_factory=list)
    #: notes whose ``created_at`` came in milliseconds (converted, and stored)
    created_at_in_ms: int = 0

    def summary(self) -> dict[str, Any]:
        return {"notes_scanned": self.scanned, "calls_in_range": len(self.calls),
                "duplicates_merged": self.duplicates_merged, "repeated_notes": self.repeated_notes,
                "out_of_range": self.out_of_range, "rejected_notes": sum(self.rejected.values()),
                "created_at_in_ms": self.created_at_in_ms}


def account_for_notes(raw_notes: Iterable[RawNote], *, start: int, end: int, client_id: str, tz: str,
                      min_seconds: int, users: dict[int, str]) -> NoteAccount:
    """Every note a call in [start, end), or counted: rejected (with its reason), repeated, merged into
    another note's call, or out of the range. One call filed on several entities is one call."""
    account = NoteAccount()
    latest: dict[tuple[str, int], CallNote] = {}
    for raw in raw_notes:
        account.scanned += 1
        parsed = parse_call_note(raw.entity_type, raw.payload)
        if isinstance(parsed, RejectedNote):
            account.rejected[parsed.reason] += 1
            account.rejected_notes.append(parsed)
            continue
        account.created_at_in_ms += parsed.created_at_in_ms
        seen = latest.get((parsed.entity_type, parsed.id))
        if seen is not None:
            account.repeated_notes += 1
            if parsed.last_change < seen.last_change:
                continue
        latest[(parsed.entity_type, parsed.id)] = parsed
    groups: dict[str, list[CallNote]] = defaultdict(list)
    for note in latest.values():
        groups[call_id_of(note)].append(note)
    for notes in groups.values():
        if not start <= min(notes, key=_speaks_for_the_call).created_at < end:
            account.out_of_range += len(notes)
            continue
        account.duplicates_merged += len(notes) - 1
        account.calls.append(call_from_notes(notes, client_id=client_id, tz=tz, min_seconds=min_seconds,
                                             users=users))
    return account


@dataclass(frozen=True)
class SyncSettings:
    min_recording_seconds: int
    chunk_size: int


def fetch_and_plan(*, client: ClientProfile, days: DateRange, run_id: str, force: bool, amocrm: AmoCrmClient,
                   calls: CallRepository, store: ObjectStore, settings: SyncSettings) -> dict[str, Any]:
    """Fetch the range's call notes, store the calls, write the download plan; returns chunk keys and what the
    fetch found (also recorded on the run, for the status answer and the run's summary)."""
    start, end = days.bounds(client.timezone)
    # notes have no created_at filter: everything updated since the range began, then select by call time
    fetch = amocrm.fetch_call_notes(updated_from=start)
    try:
        users = amocrm.users()
    except AmoCrmError as exc:  # names are a nicety; the calls are what matters
        logger.warning("amoCRM users unavailable; administrators stay unnamed", extra={"error": str(exc)})
        users = {}
    min_seconds = (client.min_recording_seconds if client.min_recording_seconds is not None
                   else settings.min_recording_seconds)
    account = account_for_notes(fetch.notes, start=start, end=end, client_id=client.client_id, tz=client.timezone,
                                min_seconds=min_seconds, users=users)
    rejected = account.rejected + fetch.rejected
    if rejected or fetch.skipped_entities:
        logger.warning("amoCRM notes not stored", extra={
            "rejected": dict(rejected), "skipped_entities": fetch.skipped_entities,
            "rejected_notes": [r.describe() for r in account.rejected_notes[:LOGGED_REJECTS]],
            "rejected_notes_not_listed": max(0, len(account.rejected_notes) - LOGGED_REJECTS)})
    stored = store_calls(calls, account.calls)
    plan = plan_calls(calls, store, process=SYNC, days=days, run_id=run_id, force=force, eligible=needs_recording,
                      chunk_size=settings.chunk_size)
    fetched = {**account.summary(), "rejected": dict(sorted(rejected.items())),
               "skipped_entities": dict(fetch.skipped_entities), **stored,
               "to_download": plan["planned"]["planned"], "amocrm_requests": amocrm.requests_sent}
    logger.info("sync planned", extra=fetched)
    if not RunRepository(calls.table).set_fields(client.client_id, SYNC, days, execution_name=run_id,
                                                 fields={"fetched": fetched}):
        logger.warning("the range's run is another execution's; the fetch counts are not recorded on it")
    return {"chunks": plan["chunks"], "fetched": fetched}


def store_calls(calls: CallRepository, fresh: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new calls, update changed ones, leave the rest: idempotent and counted exactly. A stored call
    keeps every entity it was seen on."""
    keys = [CallKey(c["day"], c["call_id"]) for c in fresh]
    existing = calls.get_many(keys)
    new = [c for c, k in zip(fresh, keys, strict=True) if k.sk not in existing]
    inserted = calls.insert_many(SYNC, new)
    updated = unchanged = 0
    for call, key in zip(fresh, keys, strict=True):
        old = existing.get(key.sk)
        if old is None:
            continue
        call["entities"] = _merged_entities(old.get("entities"), call["entities"])
        if old.get("amo_updated_at") == call["amo_updated_at"] and old.get("entities") == call["entities"]:
            unchanged += 1
            continue
        calls.update_fields(key, {f: call[f] for f in DESCRIPTIVE_FIELDS if f in call})
        updated += 1
        recording_changed = old.get("recording_url") != call.get("recording_url")
        if recording_changed or old.get("sync_skip") != call.get("sync_skip"):
            calls.transition(key, SYNC, old["sync_status"], call["sync_status"], frm_skip=old.get("sync_skip"),
                             to_skip=call.get("sync_skip"), remove=["sync_error"])
    return {"new_calls": inserted, "updated_calls": updated, "unchanged_calls": unchanged}


def _merged_entities(old: Any, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = {(e["entity_type"], e["note_id"]): e for e in new}
    for entity in old if isinstance(old, list) else []:
        if isinstance(entity, dict) and "entity_type" in entity and "note_id" in entity:
            merged.setdefault((entity["entity_type"], entity["note_id"]), entity)
    return sorted(merged.values(), key=_entity_order)


def needs_recording(call: dict[str, Any]) -> bool:
    return bool(call.get("recording_url")) and not call.get("sync_skip")
