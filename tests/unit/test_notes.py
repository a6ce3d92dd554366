"""amoCRM call notes: every odd shape real accounts send is parsed or rejected with its reason, never raised."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callsight.amocrm.notes import (
    MAX_CALL_SECONDS,
    CallNote,
    RejectedNote,
    parse_call_note,
    resolve_responsible,
)

CREATED = 1_764_000_000  # 2025-11-24
GOOD: dict[str, Any] = {
    "id": 61204123, "entity_id": 22700011, "created_at": CREATED, "updated_at": CREATED + 60,
    "responsible_user_id": 1000002, "note_type": "call_in",
    "params": {"uniq": "9f1c", "duration": 125, "source": "Mango Office", "link": "https://pbx.example/r.mp3",
               "phone": "+79161234567", "call_status": 4, "call_result": "Разговор состоялся",
               "call_responsible": 1000001},
}
USERS = {1000001: "Анна Смирнова", 1000002: "Ольга Кузнецова"}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _params(**changes: Any) -> dict[str, Any]:
    return {**GOOD, "params": {**GOOD["params"], **changes}}


def _note(payload: Any, entity_type: str = "leads") -> CallNote:
    parsed = parse_call_note(entity_type, payload)
    assert isinstance(parsed, CallNote), parsed
    return parsed


def _reject(payload: Any) -> RejectedNote:
    parsed = parse_call_note("contacts", payload)
    assert isinstance(parsed, RejectedNote), parsed
    return parsed


def test_a_documented_call_note_is_read_with_every_field() -> None:
    note = _note(GOOD)
    assert (note.id, note.entity_id, note.created_at, note.direction) == (61204123, 22700011, CREATED, "incoming")
    assert note.params.duration == 125 and note.params.link == "https://pbx.example/r.mp3"
    assert note.params.call_status == 4 and note.params.uniq == "9f1c" and not note.created_at_in_ms


@pytest.mark.parametrize(("payload", "reason"), [
    (7, "not_an_object"), ("note", "not_an_object"), (None, "not_an_object"), ([GOOD], "not_an_object"),
    (True, "not_an_object"),
    (_with(params="duration=12"), "bad_params"), (_with(params=[1, 2]), "bad_params"), (_with(params=5), "bad_params"),
    (_with(id=None), "bad_id"), (_with(id="abc"), "bad_id"), (_with(id=True), "bad_id"), (_with(id=0), "bad_id"),
    (_with(id=-4), "bad_id"), (_with(id=1.5), "bad_id"),
    (_with(created_at=None), "bad_created_at"), (_with(created_at=-1), "bad_created_at"),
    (_with(created_at=12), "bad_created_at"), (_with(created_at=10**20), "bad_created_at"),
    (_with(created_at="yesterday"), "bad_created_at"), (_with(created_at=float("inf")), "bad_created_at"),
    (_with(note_type="common"), "bad_note_type"), (_with(note_type=None), "bad_note_type"),
    (_params(duration=True), "bad_duration"), (_params(duration=False), "bad_duration"),
    (_params(duration=1e12), "bad_duration"), (_params(duration=MAX_CALL_SECONDS + 1), "bad_duration"),
    (_params(duration=-3), "bad_duration"), (_params(duration="12 min"), "bad_duration"),
    (_params(duration=[12]), "bad_duration"), (_params(duration=float("nan")), "bad_duration"),
    (_params(link=42), "bad_link"), (_params(link={"href": "x"}), "bad_link"), (_params(link="h" * 5000), "bad_link"),
])
def test_each_broken_field_is_a_named_reason(payload: Any, reason: str) -> None:
    rejected = _reject(payload)
    assert rejected.reason == reason and rejected.entity_type == "contacts"
    field = reason.removeprefix("bad_")
    assert reason == "not_an_object" or rejected.problem.startswith(f"{field}:"), rejected.problem


def test_a_rejected_note_keeps_its_id_for_the_log_but_never_a_links_text() -> None:
    secret_link = "https://pbx.example/r.mp3?token=s3cr3t-" + "x" * 5000
    rejected = _reject(_params(link=secret_link))
    assert rejected.note_id == GOOD["id"] and rejected.describe().startswith(f"contacts:{GOOD['id']} link:")
    assert "s3cr3t" not in rejected.describe()
    assert _reject(_with(params="call me", id="abc")).describe().startswith("contacts:? id:")


def test_the_first_problem_in_field_order_names_a_note_with_several() -> None:
    assert _reject({"id": "x", "created_at": -1, "note_type": 5, "params": "p"}).reason == "bad_id"
    assert _reject(_with(created_at=None, params="p")).reason == "bad_created_at"
    assert _reject(_with(params={"duration": True, "link": 5})).reason == "bad_duration"


def test_tolerated_variants_become_the_same_call() -> None:
    texts = _note({**GOOD, "id": "61204123", "entity_id": "22700011", "created_at": str(CREATED),
                   "params": {**GOOD["params"], "duration": "125", "call_status": "4"}})
    floats = _note({**GOOD, "id": 61204123.0, "created_at": float(CREATED), "params": {**GOOD["params"],
                                                                                        "duration": 125.0}})
    assert texts == floats == _note(GOOD)


@pytest.mark.parametrize(("duration", "seconds"), [("12.5", 12), (12.9, 12), ("37", 37), (" 8 ", 8), (0, 0),
                                                   (None, 0), ("", 0), (MAX_CALL_SECONDS, MAX_CALL_SECONDS)])
def test_durations_are_whole_seconds(duration: Any, seconds: int) -> None:
    assert _note(_params(duration=duration)).params.duration == seconds


def test_created_at_in_milliseconds_is_converted_and_said_so() -> None:
    note = _note(_with(created_at=CREATED * 1000 + 123, updated_at=(CREATED + 60) * 1000))
    assert note.created_at == CREATED and note.created_at_in_ms
    assert note.updated_at == CREATED + 60


def test_missing_or_odd_optional_fields_leave_the_call_standing() -> None:
    bare = _note({"id": 5, "created_at": CREATED, "note_type": "call_out"})
    assert bare.params.link is None and bare.params.duration == 0 and bare.entity_id is None
    assert bare.direction == "outgoing" and bare.last_change == CREATED
    odd = _note({**GOOD, "params": {**GOOD["params"], "call_status": 99, "phone": {"n": 1}, "uniq": ["x"],
                                    "source": None, "call_result": 5, "call_responsible": True},
                 "updated_at": "soon", "entity_id": -1, "responsible_user_id": "nobody", "_embedded": []})
    assert odd.params.call_status is None and odd.params.phone == "" and odd.params.uniq is None
    assert odd.params.call_result == "5" and odd.params.call_responsible is None
    assert odd.updated_at is None and odd.entity_id is None and odd.responsible_user_id is None
    assert _note(_with(params=None)).params.link is None
    huge = _note(_params(call_result="я" * 100_000))
    assert len(huge.params.call_result) == 1000


@pytest.mark.parametrize("payload", [
    0, -1, 1.5, "", "[]", [], [[]], {}, {"id": {}}, {"params": {"params": {}}}, {"created_at": []},
    json.loads('{"id": 1, "created_at": 1764000000, "note_type": "call_in", "params": {"duration": {"a": [1]}}}'),
    {"id": 10**30, "created_at": 10**30, "note_type": "call_in"}, {"id": "9" * 5000},
])
def test_no_json_value_raises(payload: Any) -> None:
    assert isinstance(parse_call_note("leads", payload), CallNote | RejectedNote)


@pytest.mark.parametrize(("raw", "user_id", "name", "kind"), [
    (1000001, 1000001, "Анна Смирнова", "user"),
    ("1000001", 1000001, "Анна Смирнова", "user"),
    ("Анна Смирнова", 1000001, "Анна Смирнова", "name"),
    ("Ирина (ночная смена)", None, "Ирина (ночная смена)", "name"),
    ("+7 (916) 123-45-67", None, "", "phone"),
    ("79161234567", None, "", "phone"),
    (79161234567, None, "", "phone"),
    (1000009, 1000009, "", "user"),  # an id of no known user: the id, no name
    (None, 1000002, "Ольга Кузнецова", "user"),  # none: the note's responsible user
])
def test_call_responsible_is_an_id_a_name_or_a_phone(raw: Any, user_id: int | None, name: str, kind: str) -> None:
    note = _note(_params(call_responsible=raw))
    assert note.params.call_responsible == raw
    who = resolve_responsible(note, USERS)
    assert (who.user_id, who.name, who.kind) == (user_id, name, kind)


def test_a_phone_is_never_given_the_notes_responsible_user() -> None:
    note = _note(_params(call_responsible="+7 495 120-45-01"))
    assert note.responsible_user_id == 1000002
    assert resolve_responsible(note, USERS).name == ""
    assert resolve_responsible(note, {}).kind == "phone"
