"""The sync's domain logic against the stub amoCRM and moto: selection by the clinic's day, idempotent
storage, updates, skips, downloads with per-call errors; every note a call or counted under its reason; one
call filed on several entities stored once."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import boto3
import httpx
import pytest

from callsight.amocrm import ENTITY_TYPES, AmoCrmClient, RawNote
from callsight.amocrm.tokens import StaticToken
from callsight.dal.calls import CallKey, CallRepository, CounterRepository
from callsight.dal.clients import ClientProfile
from callsight.dal.recordings import ObjectStore
from callsight.dal.runs import RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.links import LinkFetcher, LinkPolicy, PrivateHosts
from callsight.logic.download import RecordingDownloader
from callsight.logic.runs import build_status, finish_run
from callsight.logic.sync import (
    SyncSettings,
    account_for_notes,
    call_from_note,
    fetch_and_plan,
    store_calls,
)
from infra.stubs.amocrm import DEFAULT_ACCESS_TOKEN, AmoCrmStub
from infra.stubs.clinic_calls import DemoCall, generate_calls

SETTINGS = SyncSettings(min_recording_seconds=10, chunk_size=20)


@pytest.fixture(scope="module")
def stub() -> Iterator[AmoCrmStub]:
    with AmoCrmStub(demo_calls=150, rate_limit=None) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: AmoCrmStub) -> None:
    stub.configure(broken_link_rate=0, customers_enabled=True)


def _scanned(calls: list[DemoCall]) -> list[DemoCall]:
    """The stub's calls a sync finds: those filed on an entity type the client scans."""
    return [c for c in calls if any(f.entity_type in ENTITY_TYPES for f in c.filings)]


def _links(stub: AmoCrmStub, http: httpx.Client) -> LinkFetcher:
    """Links to the stub's recordings only: it serves them on loopback, which the policy refuses by default."""
    return LinkFetcher(http, LinkPolicy(PrivateHosts.parse([urlsplit(stub.url).netloc])))


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
        downloader = RecordingDownloader(client_id="demo", run_id=run_id, calls=calls, store=store,
                                         links=_links(stub, http),
                                         concurrency=4, max_bytes=200 * 1024 * 1024)  # an hour of MP3: 15 MB
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
    assert london["day"] == "2026-11-10" and london["call_id"] == moscow["call_id"]
    assert moscow["sync_skip"] == "too_short" and moscow["direction"] == "incoming"
    no_link = call_from_note({**note, "params": {"duration": 300}}, client_id="c", tz="UTC", min_seconds=10, users={})
    assert no_link["sync_skip"] == "no_recording" and no_link["sync_status"] == "success"
    assert no_link["call_id"] == "contacts-7"  # nothing to know the call by but its note
    with pytest.raises(ValueError, match="bad_params"):
        call_from_note({**note, "params": "x"}, client_id="c", tz="UTC", min_seconds=10, users={})


def test_sync_stores_every_call_and_downloads_the_recordings(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    days = _month()
    plan = _sync(stub, table, bucket, "run-1")
    expected = _scanned(stub.calls)
    calls = CallRepository(table, "demo").in_range(days)
    assert len(calls) == len(expected) == plan["fetched"]["calls_in_range"]  # type: ignore[index]
    counts = CounterRepository(table).summed("demo", "sync", days)
    assert counts["total"] == len(expected) and counts["success"] == len(expected)
    assert counts["pending"] == counts["processing"] == counts["failed"] == 0
    with_recording = [c for c in expected if c.has_recording and c.duration >= 10]
    downloaded = [c for c in calls if c.get("recording_key")]
    assert len(downloaded) == len(with_recording)
    assert stub.stats()["recording_downloads"] == len(with_recording), "a call on two entities downloaded once"
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=downloaded[0]["recording_key"])
    assert head["ContentLength"] == downloaded[0]["recording_bytes"] > 44  # a real WAV, not a placeholder
    skipped = counts.get("skipped_no_recording", 0) + counts.get("skipped_too_short", 0)
    assert skipped == len(expected) - len(with_recording)
    assert all(c["administrator"] for c in calls if c.get("responsible_user_id"))


def test_the_demo_shapes_are_stored_as_the_calls_they_are(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    """Names, phones and digits in call_responsible, durations as text, ids as text, calls on two entities."""
    plan = _sync(stub, table, bucket, "run-1")
    by_uniq = {c["uniq"]: c for c in CallRepository(table, "demo").in_range(_month())}
    expected = _scanned(stub.calls)
    shapes = {(c.responsible_as, c.duration_as, c.ids_as_text, bool(c.copies)) for c in expected}
    assert {s[0] for s in shapes} == {"id", "id_text", "name", "phone"} and {s[1] for s in shapes} >= {"text",
                                                                                                     "fraction"}
    assert any(s[2] for s in shapes) and any(s[3] for s in shapes), "the demo data has every shape"
    for demo in expected:
        call = by_uniq[demo.uniq]
        assert call["duration"] == demo.duration and call["amo_note_id"] == demo.note_id
        assert call["administrator"] == demo.administrator_name, demo.responsible_as
        assert call["direction"] == ("incoming" if demo.incoming else "outgoing")
        filed = sorted((f.entity_type, f.note_id) for f in demo.filings if f.entity_type in ENTITY_TYPES)
        assert sorted((e["entity_type"], e["note_id"]) for e in call["entities"]) == filed
    merged = sum(len([f for f in c.filings if f.entity_type in ENTITY_TYPES]) - 1 for c in expected)
    assert merged > 0 and plan["fetched"]["duplicates_merged"] == merged  # type: ignore[index]
    assert plan["fetched"]["rejected"] == {}  # type: ignore[index]


def test_an_account_without_customers_is_synced_without_them(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    stub.configure(customers_enabled=False)
    plan = _sync(stub, table, bucket, "run-1")
    fetched: dict[str, Any] = plan["fetched"]  # type: ignore[assignment]
    assert set(fetched["skipped_entities"]) == {"customers"}
    assert len(stub.served_calls()) < len(stub.calls)
    assert fetched["calls_in_range"] == len(CallRepository(table, "demo").in_range(_month())) == len(
        stub.served_calls())


def test_resync_never_duplicates_and_an_updated_note_updates(stub: AmoCrmStub, table: Table, bucket: str) -> None:
    days = _month()
    _sync(stub, table, bucket, "run-1")
    before = CounterRepository(table).summed("demo", "sync", days)
    second = _sync(stub, table, bucket, "run-2")
    assert second["fetched"]["new_calls"] == 0 and second["fetched"]["to_download"] == 0  # type: ignore[index]
    assert CounterRepository(table).summed("demo", "sync", days) == before

    call = next(c for c in stub.calls if c.has_recording and c.duration >= 10 and c.copies)
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
        downloader = RecordingDownloader(client_id="demo", run_id="run-1", calls=calls, store=store,
                                         links=_links(stub, http),
                                         concurrency=4, max_bytes=200 * 1024 * 1024)  # an hour of MP3: 15 MB
        first = downloader.run(entries)
        second = downloader.run(entries)
    assert first["downloaded"] == len(entries) and second == {"downloaded": 0, "failed": 0,
                                                             "not_pending": len(entries)}
    key = CallKey.from_sk(entries[0]["sk"])
    assert (calls.get(key) or {})["sync_status"] == "success"


# ------------------------------------------------------------------------------ every note accounted for
NOV = DateRange(date(2026, 11, 1), date(2026, 11, 30))
START, END = NOV.bounds("Europe/Moscow")
AT = int(datetime(2026, 11, 10, 9, 30, tzinfo=UTC).timestamp())


def _raw(entity_type: str, note_id: int, entity_id: int, **params: Any) -> RawNote:
    return RawNote(entity_type, {"id": note_id, "entity_id": entity_id, "created_at": AT, "updated_at": AT + 5,
                                 "note_type": "call_in", "params": {"duration": 60, **params}})


def _account(notes: list[RawNote]) -> Any:
    return account_for_notes(notes, start=START, end=END, client_id="c", tz="Europe/Moscow", min_seconds=10,
                             users={})


def _balanced(account: Any) -> None:
    assert account.scanned == (len(account.calls) + account.duplicates_merged + account.repeated_notes
                               + account.out_of_range + sum(account.rejected.values()))


def test_one_call_on_a_lead_its_contact_and_its_company_is_one_call_with_three_entities() -> None:
    link = "https://pbx.example/rec/1.mp3"
    notes = [_raw("leads", 11, 101, uniq="u-1", link=link), _raw("contacts", 12, 201, uniq="u-1", link=link),
             _raw("companies", 13, 301, uniq="u-1", link=link), _raw("leads", 14, 102, uniq="u-2", link=link)]
    account = _account(notes)
    assert len(account.calls) == 2 and account.duplicates_merged == 2
    call = next(c for c in account.calls if c["uniq"] == "u-1")
    assert call["entities"] == [{"entity_type": "leads", "entity_id": 101, "note_id": 11},
                                {"entity_type": "contacts", "entity_id": 201, "note_id": 12},
                                {"entity_type": "companies", "entity_id": 301, "note_id": 13}]
    assert call["amo_note_id"] == 11 and call["entity_type"] == "leads"
    _balanced(account)
    # the same call id whichever entity the API returns first, and on every sync
    for seed in range(5):
        shuffled = notes[:]
        random.Random(seed).shuffle(shuffled)
        again = next(c for c in _account(shuffled).calls if c["uniq"] == "u-1")
        assert again["call_id"] == call["call_id"] and again["entities"] == call["entities"]


def test_without_uniq_the_same_link_and_time_is_one_call_and_anything_else_is_not() -> None:
    link = "https://pbx.example/rec/2.mp3"
    account = _account([_raw("leads", 21, 101, link=link), _raw("contacts", 22, 201, link=link),
                        _raw("customers", 23, 401, link="https://pbx.example/rec/3.mp3"),
                        _raw("leads", 24, 102), _raw("contacts", 25, 202)])  # no uniq, no link: two calls
    assert len(account.calls) == 4 and account.duplicates_merged == 1
    merged = next(c for c in account.calls if c.get("recording_url") == link)
    assert [e["note_id"] for e in merged["entities"]] == [21, 22]
    assert {c["call_id"] for c in account.calls if "recording_url" not in c} == {"leads-24", "contacts-25"}
    _balanced(account)


def test_every_note_is_a_call_or_counted_under_its_reason() -> None:
    before, after = START - 3600, END + 60
    notes = [
        _raw("leads", 31, 101, uniq="a", link="https://pbx/a.mp3"),
        RawNote("leads", 42), RawNote("contacts", "a note"), RawNote("leads", None),
        RawNote("leads", {"id": 32, "created_at": AT, "note_type": "call_in", "params": "uniq=a"}),
        RawNote("leads", {"id": 33, "created_at": AT, "note_type": "call_in", "params": ["a"]}),
        RawNote("leads", {"id": 34, "created_at": -AT, "note_type": "call_out"}),
        RawNote("leads", {"id": 35, "created_at": AT, "note_type": "call_out", "params": {"duration": True}}),
        RawNote("leads", {"id": 36, "created_at": AT, "note_type": "call_out", "params": {"duration": 1e12}}),
        RawNote("contacts", {"id": 37, "created_at": AT * 1000, "note_type": "call_out",
                             "params": {"duration": "9.5", "link": "https://pbx/b.mp3"}}),
        RawNote("leads", {"id": 38, "created_at": before, "note_type": "call_in"}),
        RawNote("leads", {"id": 39, "created_at": after, "note_type": "call_in"}),
        _raw("leads", 31, 101, uniq="a", link="https://pbx/a.mp3"),  # the same note on a shifted page
    ]
    account = _account(notes)
    assert dict(account.rejected) == {"not_an_object": 3, "bad_params": 2, "bad_created_at": 1, "bad_duration": 2}
    assert (len(account.calls), account.out_of_range, account.repeated_notes) == (2, 2, 1)
    assert account.created_at_in_ms == 1
    in_ms = next(c for c in account.calls if c["amo_note_id"] == 37)
    assert in_ms["amo_created_at"] == AT and in_ms["duration"] == 9 and in_ms["sync_skip"] == "too_short"
    assert sorted(r.note_id or 0 for r in account.rejected_notes) == [0, 0, 0, 32, 33, 34, 35, 36]
    _balanced(account)


def test_a_resync_of_a_merged_call_is_idempotent_and_a_new_entity_joins_it(table: Table) -> None:
    calls = CallRepository(table, "c")
    link = "https://pbx.example/rec/9.mp3"
    lead, contact = _raw("leads", 51, 101, uniq="u-9", link=link), _raw("contacts", 52, 201, uniq="u-9", link=link)
    first = store_calls(calls, _account([lead]).calls)
    assert first == {"new_calls": 1, "updated_calls": 0, "unchanged_calls": 0}
    assert store_calls(calls, _account([lead]).calls)["unchanged_calls"] == 1
    joined = store_calls(calls, _account([contact, lead]).calls)
    assert joined == {"new_calls": 0, "updated_calls": 1, "unchanged_calls": 0}
    assert store_calls(calls, _account([lead, contact]).calls)["unchanged_calls"] == 1
    stored = calls.in_range(NOV)
    assert len(stored) == 1 and [e["note_id"] for e in stored[0]["entities"]] == [51, 52]
    assert store_calls(calls, _account([lead]).calls)["unchanged_calls"] == 1, "an entity seen once stays"
    counts = CounterRepository(table).summed("c", "sync", NOV)
    assert counts["total"] == 1 and counts["pending"] == 1


def test_the_rejects_reach_the_run_its_status_and_its_summary(table: Table, bucket: str) -> None:
    demo = generate_calls(40)
    single = [i for i, c in enumerate(demo) if not c.copies and c.entity_type in ENTITY_TYPES]  # one note each
    broken = dict(zip(single, ({"duration": True}, {"duration": "1 min"}, {"link": 17}), strict=False))
    calls = [replace(c, extra_params=broken.get(i, {})) for i, c in enumerate(demo)]
    days = _month()
    with AmoCrmStub(calls=calls, rate_limit=None) as stub:
        RunRepository(table).started("demo", "sync", days, execution_name="run-1", execution_arn="arn:run-1")
        plan = _sync(stub, table, bucket, "run-1", days=days)
    fetched: dict[str, Any] = plan["fetched"]  # type: ignore[assignment]
    assert fetched["rejected"] == {"bad_duration": 2, "bad_link": 1}
    scanned = _scanned(calls)
    notes = sum(len([f for f in c.filings if f.entity_type in ENTITY_TYPES]) for c in scanned)
    assert fetched["notes_scanned"] == notes and fetched["rejected_notes"] == 3
    assert fetched["calls_in_range"] == len(scanned) - 3
    status = build_status(table, client_id="demo", process="sync", days=days)
    assert status.rejected == {"bad_duration": 2, "bad_link": 1} and status.notes is not None
    assert status.notes.calls_in_range == status.total_calls == len(scanned) - 3
    summary = finish_run(table, client_id="demo", process="sync", days=days, run_id="run-1", outcome="SUCCEEDED")
    assert summary["rejected"] == {"bad_duration": 2, "bad_link": 1} and summary["notes"]["rejected_notes"] == 3
    other = build_status(table, client_id="demo", process="transcribe", days=days)
    assert other.rejected == {} and other.notes is None
