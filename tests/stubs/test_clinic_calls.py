"""Demo data of the stub amoCRM: deterministic, realistic, and scripts consistent with their scenarios."""

from __future__ import annotations

import io
import itertools
import re
import statistics
import uuid
import wave
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from infra.stubs.audio import MAX_SECONDS, SAMPLE_RATE, make_wav, read_wav_metadata
from infra.stubs.clinic_calls import (
    ADMINISTRATORS,
    BOOKING_CONFIRMATION_MARKER,
    CALL_RESULTS,
    CALL_TYPES,
    MSK,
    REASON_NOT_OFFERED,
    DemoCall,
    Scenario,
    generate_calls,
    to_note,
)

NOW = datetime(2026, 11, 28, tzinfo=UTC)
DAYS = 30
POLITE_WORDS = ("пожалуйста", "спасибо", "всего доброго", "извин")


@pytest.fixture(scope="module")
def calls() -> list[DemoCall]:
    return generate_calls(200, days=DAYS, now=NOW)


def _admin_turns(call: DemoCall) -> list[str]:
    assert call.scenario is not None
    return [text for speaker, text in call.scenario.script if speaker == "administrator"]


def test_generation_is_deterministic_and_seeded(calls: list[DemoCall]) -> None:
    assert generate_calls(200, days=DAYS, now=NOW) == calls
    assert generate_calls(200, days=DAYS, now=NOW, seed=7) != calls
    assert generate_calls(200, days=DAYS, now=NOW + timedelta(days=1)) != calls
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert generate_calls(20) == generate_calls(20, now=today)
    assert generate_calls(0, now=NOW) == []
    with pytest.raises(ValueError):
        generate_calls(5, days=0)


def test_identifiers_are_unique_and_well_formed(calls: list[DemoCall]) -> None:
    assert len(calls) == 200
    ids = [c.note_id for c in calls]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "note ids grow with creation time"
    assert [c.created_at for c in calls] == sorted(c.created_at for c in calls)
    assert len({c.uniq for c in calls}) == len(calls)
    for call in calls:
        assert str(uuid.UUID(call.uniq)) == call.uniq
        assert re.fullmatch(r"\+79\d{9}", call.phone), call.phone
        assert call.entity_id > 0


def test_directions_outcomes_and_recordings(calls: list[DemoCall]) -> None:
    incoming = [c for c in calls if c.note_type == "call_in"]
    outgoing = [c for c in calls if c.note_type == "call_out"]
    assert len(incoming) + len(outgoing) == len(calls)
    assert 0.6 <= len(incoming) / len(calls) <= 0.8
    answered = [c for c in calls if c.call_status == 4]
    missed = [c for c in calls if c.call_status != 4]
    assert 0.1 <= len(missed) / len(calls) <= 0.35
    assert {c.call_status for c in missed} == {1, 2, 3}
    for call in calls:
        assert call.call_result == CALL_RESULTS[call.call_status]
    for call in missed:
        assert 0 <= call.duration <= 30
        assert not call.has_recording
        assert call.scenario is None
    for call in answered:
        assert call.scenario is not None
    recorded = [c for c in answered if c.has_recording]
    assert 0.75 <= len(recorded) / len(answered) < 1.0, "most answered calls are recorded, some are not"
    assert CALL_RESULTS[4] == "Разговор состоялся"


def test_durations_have_a_long_tail(calls: list[DemoCall]) -> None:
    durations = [c.duration for c in calls if c.call_status == 4]
    assert max(durations) <= 3600
    very_long = [d for d in durations if d > 1400]  # longer than the gpt-4o transcribe models take
    assert very_long and len(very_long) <= 0.05 * len(durations), "a few very long calls, up to an hour"
    assert any(600 < d <= 1200 for d in durations), "some long calls"
    assert any(d < 10 for d in durations), "a few very short answered calls"
    assert 30 <= statistics.median(durations) <= 300


def test_administrators_and_entities(calls: list[DemoCall]) -> None:
    assert len(ADMINISTRATORS) >= 4
    admin_ids = {a.id for a in ADMINISTRATORS}
    assert min(admin_ids) == 1000001
    assert all(re.fullmatch(r"[А-ЯЁ][а-яё]+ [А-ЯЁ][а-яё]+", a.name) for a in ADMINISTRATORS)
    used = Counter(c.responsible_user_id for c in calls)
    assert set(used) <= admin_ids
    assert len(used) >= 4
    entities = Counter(c.entity_type for c in calls)
    assert entities["leads"] > entities["contacts"] > entities["companies"] > 0 and entities["customers"] > 0


def test_the_shapes_real_accounts_send_are_in_the_demo_data(calls: list[DemoCall]) -> None:
    forms = Counter(c.responsible_as for c in calls)
    assert forms["id"] > len(calls) / 2 and min(forms[f] for f in ("id_text", "name", "phone")) > 0
    durations = Counter(c.duration_as for c in calls)
    assert durations["int"] > len(calls) / 2 and durations["text"] > 0 and durations["fraction"] > 0
    assert 0 < sum(c.ids_as_text for c in calls) < len(calls) / 4
    copied = [c for c in calls if c.copies]
    assert 0 < len(copied) < len(calls) / 4
    assert any(len(c.copies) == 2 for c in copied), "some calls on a lead, its contact and its company"
    note_ids = [f.note_id for c in calls for f in c.filings]
    assert len(set(note_ids)) == len(note_ids), "every note its own id"
    for call in copied:
        assert call.entity_type == "leads" and [f.entity_type for f in call.copies][:1] == ["contacts"]
        notes = [to_note(call, "http://x", filing) for filing in call.filings]
        assert len({n["params"]["uniq"] for n in notes}) == 1 and len({str(n["id"]) for n in notes}) == len(notes)
        links = {n["params"].get("link") for n in notes}
        assert links == ({f"http://x{call.recording_path}"} if call.has_recording else {None})
    phone_call = next(c for c in calls if c.responsible_as == "phone")
    assert to_note(phone_call, "http://x")["params"]["call_responsible"].startswith("+7 495")
    assert phone_call.administrator_name == ""
    named = next(c for c in calls if c.responsible_as == "name")
    assert to_note(named, "http://x")["params"]["call_responsible"] == named.administrator_name != ""
    fraction = next(c for c in calls if c.duration_as == "fraction")
    assert to_note(fraction, "http://x")["params"]["duration"] == f"{fraction.duration}.5"


def test_calls_fall_in_the_window_mostly_in_clinic_hours(calls: list[DemoCall]) -> None:
    now_ts = int(NOW.timestamp())
    for call in calls:
        assert now_ts - DAYS * 86400 <= call.created_at < now_ts
        assert call.created_at <= call.updated_at < now_ts
    late_updates = [c for c in calls if c.updated_at - c.created_at >= 86400]
    assert 1 <= len(late_updates) <= 0.12 * len(calls)
    local = [datetime.fromtimestamp(c.created_at, MSK) for c in calls]
    in_hours = [t for t in local if 8 <= t.hour < 20]
    assert len(in_hours) / len(local) >= 0.85
    by_weekday = Counter(t.weekday() for t in local)
    weekday_average = sum(by_weekday[d] for d in range(5)) / 5
    assert by_weekday[6] < 0.6 * weekday_average, "fewer calls on Sundays"


def test_scenarios_cover_every_call_type(calls: list[DemoCall]) -> None:
    types = Counter(c.scenario.call_type for c in calls if c.scenario is not None)
    assert set(types) == set(CALL_TYPES)
    assert types.most_common(1)[0][0] == "booking"


@pytest.mark.parametrize("seed", [20261128, 1, 2, 3])
def test_scripts_are_russian_and_consistent_with_the_scenario(seed: int) -> None:
    for call in generate_calls(200, days=DAYS, now=NOW, seed=seed):
        scenario = call.scenario
        if scenario is None:
            continue
        script = scenario.script
        assert len(script) >= 2
        assert {speaker for speaker, _ in script} <= {"administrator", "patient"}
        assert all(a[0] != b[0] for a, b in itertools.pairwise(script)), "turns alternate"
        text = " ".join(t for _, t in script)
        assert len(re.findall(r"[А-Яа-яЁё]", text)) > 0.6 * len(re.findall(r"[A-Za-z]", text)) + 10
        admin = _admin_turns(call)
        admin_text = " ".join(admin).lower()
        first_name = scenario.administrator_name.split()[0]
        assert scenario.greeted_properly == bool(re.search(rf"\b{first_name}\b", admin[0])), admin[0]
        if scenario.greeted_properly and call.note_type == "call_in":
            assert "Здоровье" in admin[0]
        assert scenario.booked == (BOOKING_CONFIRMATION_MARKER in admin_text)
        if scenario.booked:
            assert scenario.offered_booking
            assert scenario.not_booked_reason is None
            assert BOOKING_CONFIRMATION_MARKER in " ".join(admin[-3:]).lower(), "ends with the confirmation"
            assert scenario.appointment_at is not None
            assert datetime.fromisoformat(scenario.appointment_at).timestamp() > call.created_at
            assert scenario.named_next_step == ("sms" in admin_text)
            if scenario.call_type != "reschedule":
                assert f"{scenario.price_rub:,}".replace(",", " ") in text, "the confirmation names the price"
        else:
            assert scenario.appointment_at is None
        if not scenario.polite:
            assert not any(word in admin_text for word in POLITE_WORDS), admin_text
        else:
            assert any(word in admin_text for word in POLITE_WORDS), admin_text
        if scenario.call_type in ("booking", "price_question", "test_results") and call.duration >= 10:
            assert scenario.offered_booking or scenario.not_booked_reason == REASON_NOT_OFFERED
        if scenario.call_type == "spam":
            assert scenario.doctor_name is None and not scenario.booked and not scenario.offered_booking
        elif scenario.booked and scenario.call_type == "booking" and call.note_type == "call_in":
            assert scenario.patient_name in text, "the administrator took the patient's name"


def test_scenario_round_trips_through_a_dict(calls: list[DemoCall]) -> None:
    for call in calls:
        if call.scenario is not None:
            assert Scenario.from_dict(call.scenario.to_dict()) == call.scenario
            assert call.scenario.transcript().count("\n") == len(call.scenario.script) - 1


def test_to_note_is_an_amocrm_v4_call_note(calls: list[DemoCall]) -> None:
    recorded = next(c for c in calls if c.has_recording and c.responsible_as == "id" and c.duration_as == "int"
                    and not c.ids_as_text)
    note = to_note(recorded, "http://stub.example:8101/")
    assert set(note) == {
        "id",
        "entity_id",
        "created_by",
        "updated_by",
        "created_at",
        "updated_at",
        "responsible_user_id",
        "group_id",
        "note_type",
        "account_id",
        "params",
        "_links",
    }
    assert note["id"] == recorded.note_id and note["group_id"] == 0
    params = note["params"]
    assert params == {
        "uniq": recorded.uniq,
        "duration": recorded.duration,
        "source": "Mango Office",
        "link": f"http://stub.example:8101/recordings/{recorded.uniq}.wav",
        "phone": recorded.phone,
        "call_result": recorded.call_result,
        "call_status": recorded.call_status,
        "call_responsible": recorded.responsible_user_id,
    }
    assert note["_links"]["self"]["href"].startswith("http://stub.example:8101/api/v4/")
    unrecorded = next(c for c in calls if not c.has_recording)
    assert "link" not in to_note(unrecorded, "http://x")["params"]


def test_wav_is_valid_small_and_carries_the_scenario(calls: list[DemoCall]) -> None:
    long_call = next(c for c in calls if c.has_recording and c.duration > 60)
    data = make_wav(long_call)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == SAMPLE_RATE
        assert reader.getnframes() == int(MAX_SECONDS * SAMPLE_RATE)
        frames = reader.readframes(reader.getnframes())
    assert any(frames), "not silence"
    assert len(data) < 150_000
    assert make_wav(long_call) == data, "deterministic"
    metadata = read_wav_metadata(data)
    assert metadata is not None
    assert metadata["uniq"] == long_call.uniq
    assert metadata["note_type"] == long_call.note_type
    assert metadata["duration"] == long_call.duration
    assert long_call.scenario is not None
    assert Scenario.from_dict(metadata["scenario"]) == long_call.scenario

    short_call = next(c for c in calls if c.call_status == 4 and c.duration < 10)
    with wave.open(io.BytesIO(make_wav(short_call))) as reader:
        assert reader.getnframes() == short_call.duration * SAMPLE_RATE

    assert read_wav_metadata(b"not a wav at all") is None
    with wave.open(buffer := io.BytesIO(), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\0\0" * 80)
    assert read_wav_metadata(buffer.getvalue()) is None
