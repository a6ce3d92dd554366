"""The sync process: amoCRM call notes -> stored calls -> recordings in S3.

Step 1 (one task) fetches every call note of the range, stores each call idempotently (a re-sync
never duplicates, an updated note updates) and plans the downloads in chunks written to S3.
Step 2 (one task per chunk, fanned out by the state machine) downloads the recordings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from aws_lambda_powertools import Logger

from callsight.amocrm import AmoCrmClient
from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.clients import ClientProfile
from callsight.dal.recordings import ObjectStore, recording_key
from callsight.dates import DateRange, local_day, local_iso, utc_now_iso
from callsight.errors import AmoCrmError, RecordingDownloadError
from callsight.logic.steps import ChunkWorker, plan_calls
from callsight.processes import CallStatus, Process, SkipReason
from callsight.transcription.audio import UPLOAD_FORMATS

logger = Logger(child=True)

SYNC = Process.SYNC.value
PENDING, SUCCESS = CallStatus.PENDING.value, CallStatus.SUCCESS.value
#: fields a re-sync may change; statuses change only through transitions
DESCRIPTIVE_FIELDS = (
    "call_time", "direction", "duration", "phone", "call_status", "call_result", "responsible_user_id",
    "administrator", "recording_url", "uniq", "source", "amo_updated_at", "entity_id",
)
_AUDIO_TYPES = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/x-wav": "wav",
                "audio/wave": "wav", "audio/ogg": "ogg", "audio/mp4": "m4a", "audio/x-m4a": "m4a",
                "audio/webm": "webm", "audio/flac": "flac"}


def call_from_note(note: dict[str, Any], *, client_id: str, tz: str, min_seconds: int,
                   users: dict[int, str]) -> dict[str, Any]:
    """A stored call from an amoCRM call note; raises KeyError/ValueError on a malformed note."""
    params = note.get("params") or {}
    entity_type = str(note.get("entity_type", "leads"))
    created = int(note["created_at"])
    duration = int(params.get("duration") or 0)
    link = str(params.get("link") or "").strip() or None
    responsible = params.get("call_responsible") or note.get("responsible_user_id")
    skip = None
    if not link:
        skip = SkipReason.NO_RECORDING.value
    elif duration < min_seconds:
        skip = SkipReason.TOO_SHORT.value
    call: dict[str, Any] = {
        "client_id": client_id,
        "call_id": f"{entity_type}-{int(note['id'])}",
        "day": local_day(created, tz).isoformat(),
        "call_time": local_iso(created, tz),
        "amo_note_id": int(note["id"]),
        "amo_created_at": created,
        "amo_updated_at": int(note.get("updated_at") or created),
        "entity_type": entity_type,
        "entity_id": int(note.get("entity_id") or 0),
        "direction": "incoming" if note.get("note_type") == "call_in" else "outgoing",
        "duration": duration,
        "phone": str(params.get("phone") or ""),
        "call_status": int(params["call_status"]) if params.get("call_status") is not None else None,
        "call_result": str(params.get("call_result") or ""),
        "responsible_user_id": int(responsible) if responsible else None,
        "administrator": users.get(int(responsible), "") if responsible else "",
        "recording_url": link,
        "uniq": str(params.get("uniq") or ""),
        "source": str(params.get("source") or ""),
        "synced_at": utc_now_iso(),
        "sync_status": SUCCESS if skip else PENDING,
    }
    if skip:
        call["sync_skip"] = skip
    return {k: v for k, v in call.items() if v is not None}


@dataclass(frozen=True)
class SyncSettings:
    min_recording_seconds: int
    chunk_size: int


def fetch_and_plan(*, client: ClientProfile, days: DateRange, run_id: str, force: bool, amocrm: AmoCrmClient,
                   calls: CallRepository, store: ObjectStore, settings: SyncSettings) -> dict[str, Any]:
    """Fetch the range's call notes, store the calls, write the download plan; returns chunk keys."""
    start, end = days.bounds(client.timezone)
    # notes have no created_at filter: everything updated since the range began, then select by call time
    notes = amocrm.all_call_notes(updated_from=start)
    try:
        users = amocrm.users()
    except AmoCrmError as exc:  # names are a nicety; the calls are what matters
        logger.warning("amoCRM users unavailable; administrators stay unnamed", extra={"error": str(exc)})
        users = {}
    min_seconds = (client.min_recording_seconds if client.min_recording_seconds is not None
                   else settings.min_recording_seconds)
    fresh: dict[str, dict[str, Any]] = {}
    malformed = 0
    for note in notes:
        try:
            if not start <= int(note["created_at"]) < end:
                continue
            call = call_from_note(note, client_id=client.client_id, tz=client.timezone,
                                  min_seconds=min_seconds, users=users)
        except (KeyError, ValueError, TypeError):
            malformed += 1
            continue
        fresh[f"{call['day']}#{call['call_id']}"] = call
    stored = store_calls(calls, list(fresh.values()))
    plan = plan_calls(calls, store, process=SYNC, days=days, run_id=run_id, force=force, eligible=needs_recording,
                      chunk_size=settings.chunk_size)
    fetched = {"notes_scanned": len(notes), "calls_in_range": len(fresh), "malformed_notes": malformed,
               **stored, "to_download": plan["planned"]["planned"], "amocrm_requests": amocrm.requests_sent}
    logger.info("sync planned", extra=fetched)
    return {"chunks": plan["chunks"], "fetched": fetched}


def store_calls(calls: CallRepository, fresh: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new calls, update changed ones, leave the rest: idempotent and counted exactly."""
    keys = [CallKey(c["day"], c["call_id"]) for c in fresh]
    existing = calls.get_many(keys)
    new = [c for c, k in zip(fresh, keys, strict=True) if k.sk not in existing]
    inserted = calls.insert_many(SYNC, new)
    updated = unchanged = 0
    for call, key in zip(fresh, keys, strict=True):
        old = existing.get(key.sk)
        if old is None:
            continue
        if old.get("amo_updated_at") == call["amo_updated_at"]:
            unchanged += 1
            continue
        calls.update_fields(key, {f: call[f] for f in DESCRIPTIVE_FIELDS if f in call})
        updated += 1
        recording_changed = old.get("recording_url") != call.get("recording_url")
        if recording_changed or old.get("sync_skip") != call.get("sync_skip"):
            calls.transition(key, SYNC, old["sync_status"], call["sync_status"], frm_skip=old.get("sync_skip"),
                             to_skip=call.get("sync_skip"), remove=["sync_error"])
    return {"new_calls": inserted, "updated_calls": updated, "unchanged_calls": unchanged}


def needs_recording(call: dict[str, Any]) -> bool:
    return bool(call.get("recording_url")) and not call.get("sync_skip")


class RecordingDownloader:
    """Downloads one chunk's recordings to S3, ``concurrency`` at a time; each failure stays on its call."""

    def __init__(self, *, client_id: str, run_id: str, calls: CallRepository, store: ObjectStore,
                 http: httpx.Client, concurrency: int, max_bytes: int) -> None:
        self.client_id = client_id
        self.store = store
        self.http = http
        self.max_bytes = max_bytes
        self.worker = ChunkWorker(process=SYNC, run_id=run_id, calls=calls, concurrency=concurrency,
                                  work=lambda key, call: self._fetch_to_s3(key, call["recording_url"]))

    def run(self, entries: list[dict[str, str]]) -> dict[str, int]:
        result = self.worker.run(entries)
        return {"downloaded": result["succeeded"], "failed": result["failed"], "not_pending": result["not_pending"]}

    def _fetch_to_s3(self, key: CallKey, url: str) -> dict[str, Any]:
        host = urlsplit(url).netloc or "?"
        try:
            with self.http.stream("GET", url, follow_redirects=True) as answer:
                if answer.status_code != 200:
                    raise RecordingDownloadError(f"recording download failed: HTTP {answer.status_code} from {host}")
                content_type = answer.headers.get("content-type", "").split(";")[0].strip().lower()
                extension = _AUDIO_TYPES.get(content_type) or _extension(url)
                with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
                    size = 0
                    for block in answer.iter_bytes(64 * 1024):
                        size += len(block)
                        if size > self.max_bytes:
                            raise RecordingDownloadError(
                                f"recording download failed: larger than {self.max_bytes} bytes ({host})")
                        buffer.write(block)
                    if size == 0:
                        raise RecordingDownloadError(f"recording download failed: empty file from {host}")
                    buffer.seek(0)
                    s3_key = recording_key(self.client_id, key.day, key.call_id, extension)
                    self.store.upload(s3_key, buffer, content_type or f"audio/{extension}")
        except httpx.HTTPError as exc:
            raise RecordingDownloadError(f"recording download failed: {type(exc).__name__} from {host}") from None
        return {"recording_key": s3_key, "recording_bytes": size, "recording_content_type": content_type}


def _extension(url: str) -> str:
    path = urlsplit(url).path
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return suffix if suffix in UPLOAD_FORMATS else "mp3"
