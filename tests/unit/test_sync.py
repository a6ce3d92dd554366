"""The sync's domain logic against the stub amoCRM and moto: selection by the clinic's day, idempotent
storage, updates, skips, downloads with per-call errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import httpx
import pytest

from callsight.amocrm import AmoCrmClient
from callsight.amocrm.tokens import StaticToken
from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.clients import ClientProfile
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.sync import RecordingDownloader, SyncSettings, call_from_note, fetch_and_plan
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN, AmoCrmStub

SETTINGS = SyncSettings(min_recording_seconds=10, chunk_size=20)


@pytest.fixture(scope="module")
def stub() -> Iterator[AmoCrmStub]:
    with AmoCrmStub(demo_calls=150, rate_limit=None) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: AmoCrmStub) -> None:
    stub.configure(broken_link_rate=0)


def _month(tz: str = "Europe/Moscow") -> DateRange:
    today = datetime.now(ZoneInfo(tz)).date()
    return DateRange(today - timedelta(days=31), today)  # the stub's 30 UTC days, whatever the hour


def _sync(stub: AmoCrmStub, table: Table, bucket: str, run_id: str, days: DateRange | None = None,
          force: bool = False) -> dict[str, object]:
    client = ClientProfile(client_id="demo", amocrm_subdomain="demo", amocrm_base_url=stub.url)
    amocrm = AmoCrmClient(stub.url, StaticToken(DEFAULT_ACCESS_TOKEN), requests_per_second=100)
    store = ObjectStore(bucket)
    calls = CallRepository(table, "demo")
    plan = fetch_and_plan(client=client, days=days or _month(), run_id=run_id, force=force, amocrm=amocrm,
                          calls=calls, store=store, settings=SETTINGS)
    with httpx.Client() as http:
        downloader = RecordingDownloader(client_id="demo", run_id=run_id, calls=calls, store=store, http=http,
                                         concurrency=4, max_bytes=10_000_000)
        for key in plan["chunks"]:  # type: ignore[attr-defined]
            downloader.run(store.get_json(key))
    return plan


def test_call_time_is_read_in_the_clinics_time_zone() -> None:
    late_evening = int(datetime(2026, 11, 10, 20, 30, tzinfo=UTC).timestamp())  # 23:30 in Moscow
    note = {"id": 7, "entity_type": "contacts", "created_at": late_evening, "updated_at": late_evening,
            "note_type": "call_in", "params": {"duration": 5, "link": "https://pbx/r.mp3", "call_status": 4}}
    moscow = call_from_note(note, client_id="c", tz="Europe/Moscow", min_seconds=10, users={})
    london = call_from_note(note, client_id="c", tz="Europe/London", min_seconds=10, users={})
    assert moscow["day"] == "2026-11-10" and moscow["call_time"].startswith("2026-11-10T23:30")
    assert london["day"] == "2026-11-10" and london["call_id"] == "contacts-7"
    assert moscow["sync_skip"] == "too_short" and moscow["direction"] == "incoming"
    no_link = call_from_note({**note, "params": {"duration": 300}}, client_id="c", tz="UTC", min_seconds=10, users={})
    assert no_link["sync_skip"] == "no_recording" and no_link["sync_status"] == "success"


def test_sync_stores_every_call_and_downloads_the_recordings(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    days = _month()
    plan = _sync(stub, table, bucket, "run-1")
    calls = CallRepository(table, "demo").in_range(days)
    assert len(calls) == len(stub.calls) == plan["fetched"]["calls_in_range"]  # type: ignore[index]
    counts = CounterRepository(table).summed("demo", "sync", days)
    assert counts["total"] == len(stub.calls) and counts["success"] == len(stub.calls)
    assert counts["pending"] == counts["processing"] == counts["failed"] == 0
    with_recording = [c for c in stub.calls if c.has_recording and c.duration >= 10]
    downloaded = [c for c in calls if c.get("recording_key")]
    assert len(downloaded) == len(with_recording)
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=downloaded[0]["recording_key"])
    assert head["ContentLength"] == downloaded[0]["recording_bytes"] > 44  # a real WAV, not a placeholder
    skipped = counts.get("skipped_no_recording", 0) + counts.get("skipped_too_short", 0)
    assert skipped == len(stub.calls) - len(with_recording)
    assert all(c["administrator"] for c in calls if c.get("responsible_user_id"))


def test_resync_never_duplicates_and_an_updated_note_updates(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    days = _month()
    _sync(stub, table, bucket, "run-1")
    before = CounterRepository(table).summed("demo", "sync", days)
    second = _sync(stub, table, bucket, "run-2")
    assert second["fetched"]["new_calls"] == 0 and second["fetched"]["to_download"] == 0  # type: ignore[index]
    assert CounterRepository(table).summed("demo", "sync", days) == before

    call = next(c for c in stub.calls if c.has_recording and c.duration >= 10)
    stub.update_note(call.note_id, call_result="Перезвонили, записали на приём")
    third = _sync(stub, table, bucket, "run-3")
    assert third["fetched"]["updated_calls"] == 1  # type: ignore[index]
    stored = [c for c in CallRepository(table, "demo").in_range(days) if c["amo_note_id"] == call.note_id]
    assert len(stored) == 1 and stored[0]["call_result"] == "Перезвонили, записали на приём"
    assert CounterRepository(table).summed("demo", "sync", days)["total"] == before["total"]


def test_a_broken_link_is_that_calls_own_error_and_a_resync_retries_it(
        stub: AmoCrmStub, table: Table, bucket: str) -> None:
    days = _month()
    stub.configure(broken_link_rate=0.2)
    _sync(stub, table, bucket, "run-1")
    counts = CounterRepository(table).summed("demo", "sync", days)
    failed = [c for c in CallRepository(table, "demo").in_range(days) if c["sync_status"] == "failed"]
    assert counts["failed"] == len(failed) > 0
    assert all("HTTP 40" in c["sync_error"] for c in failed)
    assert counts["success"] + counts["failed"] == counts["total"]
    # links work again: starting the same sync again retries exactly the failed calls
    stub.configure(broken_link_rate=0)
    again = _sync(stub, table, bucket, "run-2")
    assert again["fetched"]["to_download"] == len(failed)  # type: ignore[index]
    assert CounterRepository(table).summed("demo", "sync", days)["failed"] == 0


def test_a_duplicate_delivery_of_a_chunk_downloads_nothing_twice(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    client = ClientProfile(client_id="demo", amocrm_subdomain="demo", amocrm_base_url=stub.url)
    amocrm = AmoCrmClient(stub.url, StaticToken(DEFAULT_ACCESS_TOKEN), requests_per_second=100)
    store, calls = ObjectStore(bucket), CallRepository(table, "demo")
    plan = fetch_and_plan(client=client, days=_month(), run_id="run-1", force=False, amocrm=amocrm, calls=calls,
                          store=store, settings=SETTINGS)
    entries = store.get_json(plan["chunks"][0])
    with httpx.Client() as http:
        downloader = RecordingDownloader(client_id="demo", run_id="run-1", calls=calls, store=store, http=http,
                                         concurrency=4, max_bytes=10_000_000)
        first = downloader.run(entries)
        second = downloader.run(entries)
    assert first["downloaded"] == len(entries) and second == {"downloaded": 0, "failed": 0,
                                                             "not_pending": len(entries)}
    key = CallKey.from_sk(entries[0]["sk"])
    assert (calls.get(key) or {})["sync_status"] == "success"
