"""A clinic whose amoCRM sends every odd shape real accounts do (a look-alike server, not the demo stub): the sync
completes, each note is stored or counted under its reason, one call filed on three entities is one call, and an
account without customers is scanned without them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from callsight.admin import register_client
from callsight.dal.clients import AmoCrmCredentials, ClientProfile
from infra.platform import LocalPlatform
from tests.amocrm.lookalike import TOKEN, Answer, LookalikeAmoCrm, page, problem
from tests.api.conftest import PBX_PORT, SYNC, assert_invariant, wait_finished

pytestmark = pytest.mark.platform

DAY = 86400


def _note(note_id: Any, at: Any, **params: Any) -> dict[str, Any]:
    return {"id": note_id, "entity_id": 500 + int(str(note_id)[-2:]), "created_at": at, "updated_at": at,
            "responsible_user_id": 7, "note_type": "call_in", "params": params}


def _accounts(now: int) -> dict[str, list[Any]]:
    at = now - 2 * DAY
    link = "https://pbx.example/rec/same.mp3"  # downloads are not this test's subject: every call is too short
    leads = [
        _note(101, at, uniq="u-3", duration=4, link="https://pbx.example/rec/3.mp3", call_responsible=7),
        _note("102", str(at), duration="5.5", call_responsible="Анна Смирнова"),
        _note(103, at * 1000, duration=3, call_responsible="+7 (495) 120-45-01"),  # created_at in ms
        _note(104, at, duration=2, link=link),  # no uniq: the same link and time as contact note 203
        {**_note(105, at), "params": "duration=12"},
        {**_note(106, at), "params": ["a"]},
        _note(107, -at),
        _note(108, at, duration=True),
        _note(109, at, duration=1e12),
        {**_note(110, at), "note_type": "common"},
        _note(111, at - 90 * DAY, duration=1),  # updated lately, made long before the range
        42, "a note", None,
    ]
    contacts = [_note(201, at, uniq="u-3", duration=4, link="https://pbx.example/rec/3.mp3"),
                _note(203, at, duration=2, link=link)]
    companies = [_note(301, at, uniq="u-3", duration=4, link="https://pbx.example/rec/3.mp3")]
    return {"leads": [page(leads[:8], next_href="{base}/api/v4/leads/notes?page=2"), page(leads[8:])],
            "contacts": [page(contacts)], "companies": [page(companies)]}


def test_a_malformed_accounts_sync_completes_with_every_note_stored_or_counted(
        api: httpx.Client, platform: LocalPlatform, month: dict[str, str]) -> None:
    now = int(time.time())
    users = [{"id": 7, "name": "Анна Смирнова"}, {"name": "без id"}, "not a user", {"id": "x"}]
    customers_off = Answer(402, problem(402, "Customers are disabled in this account"))
    with LookalikeAmoCrm(notes=_accounts(now), users=users,
                         answers={"/api/v4/customers/notes": customers_off}) as amo:
        client_id = f"malformed-{now % 100000}"
        register_client(ClientProfile(client_id=client_id, amocrm_subdomain="lookalike", amocrm_base_url=amo.url,
                                      timezone="Europe/Moscow"),
                        AmoCrmCredentials(access_token=SecretStr(TOKEN)), table_name=platform.table_name,
                        secret_prefix=platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])
        started = api.post(SYNC, json={"client_id": client_id, **month})
        assert started.status_code in (200, 202), started.text
        status = wait_finished(api, client_id, month, timeout=120)

    assert status["overall_status"] == "completed", status
    assert_invariant(status)
    assert status["rejected"] == {"not_an_object": 3, "bad_params": 2, "bad_created_at": 1, "bad_duration": 2,
                                  "bad_note_type": 1}
    assert status["notes"] == {"notes_scanned": 17, "calls_in_range": 4, "duplicates_merged": 3, "repeated_notes": 0,
                               "out_of_range": 1, "rejected_notes": 9}
    assert set(status["skipped_entities"]) == {"customers"} and "402" in status["skipped_entities"]["customers"]
    assert status["total_calls"] == 4 and status["skipped"] == {"too_short": 2, "no_recording": 2}

    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk",
                        ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})["Items"]
    by_note = {int(i["amo_note_id"]): i for i in items}
    assert set(by_note) == {101, 102, 103, 104}
    assert [(e["entity_type"], int(e["note_id"])) for e in by_note[101]["entities"]] == [
        ("leads", 101), ("contacts", 201), ("companies", 301)]
    assert [int(e["note_id"]) for e in by_note[104]["entities"]] == [104, 203]
    assert by_note[101]["administrator"] == "Анна Смирнова" and by_note[102]["administrator"] == "Анна Смирнова"
    assert by_note[103]["administrator"] == "" and by_note[103]["call_responsible"] == "+7 (495) 120-45-01"
    assert int(by_note[102]["duration"]) == 5 and int(by_note[103]["amo_created_at"]) == now - 2 * DAY


def _register(platform: LocalPlatform, amo: LookalikeAmoCrm, name: str) -> str:
    client_id = f"{name}-{int(time.time() * 1000) % 10**7}"
    register_client(ClientProfile(client_id=client_id, amocrm_subdomain="lookalike", amocrm_base_url=amo.url,
                                  timezone="Europe/Moscow"),
                    AmoCrmCredentials(access_token=SecretStr(TOKEN)), table_name=platform.table_name,
                    secret_prefix=platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"])
    return client_id


def test_a_self_looping_next_link_fails_the_run_within_a_minute_and_frees_the_clinic(
        api: httpx.Client, platform: LocalPlatform, month: dict[str, str]) -> None:
    at = int(time.time()) - 2 * DAY
    looping = page([_note(401, at, duration=30)], next_href="{base}/api/v4/contacts/notes?page=1")
    with LookalikeAmoCrm(notes={"leads": [page([_note(402, at, duration=30)])], "contacts": [looping]}) as amo:
        client_id = _register(platform, amo, "looping")
        began = time.monotonic()
        started = api.post(SYNC, json={"client_id": client_id, **month})
        status = wait_finished(api, client_id, month, timeout=60)
        took = time.monotonic() - began
        contacts_pages = [r for r in amo.requests if r.path == "/api/v4/contacts/notes"]
        again = api.post(SYNC, json={"client_id": client_id, **month})  # the clinic is not left locked (no 409)
        wait_finished(api, client_id, month, timeout=60)

    # a sync that ends while the start waits answers at once: here 502 run_failed with the reason
    assert started.status_code == 502 and "loops" in started.json()["message"], started.text
    assert status["overall_status"] == "failed", status
    assert "contacts" in status["error"] and "loops" in status["error"], status["error"]
    assert took < 60 and len(contacts_pages) <= 2
    assert again.status_code == 502 and again.json()["error"] == "run_failed", again.text


MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 4000


def test_calls_on_customers_are_synced_and_a_body_that_is_not_audio_is_that_calls_error(
        api: httpx.Client, platform: LocalPlatform, month: dict[str, str]) -> None:
    at = int(time.time()) - 2 * DAY
    # a PBX on the private network the platform allows (RecordingPrivateHosts): one real recording, one internal page
    answers = {"/rec/1.mp3": Answer(200, MP3, content_type="application/octet-stream"),
               "/rec/secret": Answer(200, "internal-secret", content_type="text/plain")}
    notes = {"customers": [page([_note(501, at, uniq="c-1", duration=40, link="{base}/rec/1.mp3")])],
             "leads": [page([_note(502, at, uniq="l-1", duration=40, link="{base}/rec/secret")])]}
    with LookalikeAmoCrm(notes=notes, answers=answers, port=PBX_PORT) as amo:
        client_id = _register(platform, amo, "pbx")
        assert api.post(SYNC, json={"client_id": client_id, **month}).status_code in (200, 202)
        status = wait_finished(api, client_id, month, timeout=120)

    assert status["overall_status"] == "partial", status
    assert status["status_breakdown"] == {"pending": 0, "processing": 0, "success": 1, "failed": 1}
    table = platform.boto3_resource("dynamodb").Table(platform.table_name)
    items = table.query(KeyConditionExpression="pk = :pk",
                        ExpressionAttributeValues={":pk": f"CALLS#{client_id}"})["Items"]
    by_note = {int(i["amo_note_id"]): i for i in items}
    assert by_note[501]["entity_type"] == "customers" and by_note[501]["recording_key"].endswith(".mp3")
    assert by_note[502]["sync_status"] == "failed" and "not audio" in by_note[502]["sync_error"]
    assert "recording_key" not in by_note[502]
