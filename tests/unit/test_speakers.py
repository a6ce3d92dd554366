"""Labelling the lines of mono calls as the administrator's or the patient's (cue phrases + turn taking)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from callsight.transcription.speakers import (
    Direction,
    cue_score,
    format_dialogue,
    label_speakers,
    labelled_lines,
    matched_cues,
)
from infra.stubs.clinic_calls import DemoCall, generate_calls

NOW = datetime(2026, 11, 28, tzinfo=UTC)
A, P = "administrator", "patient"


@pytest.fixture(scope="module")
def answered() -> list[DemoCall]:
    calls = [call for call in generate_calls(300, now=NOW) if call.scenario is not None]
    assert len(calls) > 150
    return calls


def direction_of(call: DemoCall) -> Direction:
    return "incoming" if call.note_type == "call_in" else "outgoing"


def script(call: DemoCall) -> list[tuple[str, str]]:
    assert call.scenario is not None
    return call.scenario.script


def accuracy(calls: list[DemoCall], *, drop_first: int = 0, sentences: bool = False, **options: float) -> float:
    right = total = 0
    for call in calls:
        lines = script(call)[drop_first:]
        if sentences:  # speech-recognition-like segments: several in a row from one speaker
            lines = [(who, part) for who, text in lines for part in re.split(r"(?<=[.!?])\s+", text) if part]
        labels = label_speakers([text for _, text in lines], direction=direction_of(call), **options)
        assert len(labels) == len(lines)
        right += sum(label == who for label, (who, _) in zip(labels, lines, strict=True))
        total += len(lines)
    return right / total


def test_demo_calls_are_labelled_right(answered: list[DemoCall]) -> None:
    assert accuracy(answered) >= 0.95


def test_the_administrator_answers_incoming_calls(answered: list[DemoCall]) -> None:
    incoming = [call for call in answered if call.note_type == "call_in"]
    assert incoming
    for call in incoming:
        assert label_speakers([text for _, text in script(call)], direction="incoming")[0] == A


def test_the_patient_answers_outgoing_calls(answered: list[DemoCall]) -> None:
    outgoing = [call for call in answered if call.note_type == "call_out"]
    assert outgoing
    for call in outgoing:
        assert label_speakers([text for _, text in script(call)], direction="outgoing")[0] == P


def test_cues_recover_from_a_missing_first_line(answered: list[DemoCall]) -> None:
    """Without the greeting (or the "Алло") alternation alone would swap every label; the cues prevent it."""
    assert accuracy(answered, drop_first=1) >= 0.95


def test_cues_alone_point_the_right_way(answered: list[DemoCall]) -> None:
    fired = right = total = 0
    for call in answered:
        for index, (who, text) in enumerate(script(call)):
            total += 1
            score = cue_score(text, index=index, direction=direction_of(call))
            if score:
                fired += 1
                right += (score > 0) == (who == A)
    assert fired / total >= 0.8
    assert right / fired >= 0.95


def test_sentence_segments_with_a_lower_same_speaker_penalty(answered: list[DemoCall]) -> None:
    assert accuracy(answered, sentences=True, same_speaker_penalty=0.5) >= 0.85


def test_strong_cues_override_alternation() -> None:
    lines = [
        "Клиника «Здоровье», администратор Анна, здравствуйте!",
        "Здравствуйте, я хочу записаться к терапевту.",
        "У меня температура третий день, мне нужно побыстрее.",
        "Могу записать вас на завтра в 10:00. Вам удобно?",
        "Да, давайте.",
        "Минутку, проверю.",
        "Вижу свободное время у Елены Викторовны, вы записаны на завтра на 10:00. Приём стоит 1 800 рублей.",
        "Спасибо, до свидания.",
    ]
    assert label_speakers(lines, direction="incoming") == [A, P, P, A, P, A, A, P]


def test_outgoing_call() -> None:
    lines = [
        "Алло.",
        "Здравствуйте, Ирина Олеговна! Это Ольга, администратор клиники «Здоровье». Вам удобно сейчас говорить?",
        "Да, удобно.",
        "Напоминаю о вашем приёме у терапевта завтра в 9:30. Подтверждаете визит?",
        "Да, всё в силе, приду.",
        "Ждём вас, всего доброго!",
        "До свидания.",
    ]
    assert label_speakers(lines, direction="outgoing") == [P, A, P, A, P, A, P]


def test_lines_without_cues_alternate() -> None:
    assert label_speakers(["Алло.", "Э-э...", "Гм.", "Ну вот."], direction="incoming") == [A, P, A, P]
    assert label_speakers(["Угу.", "Так."], direction="outgoing") == [P, A]
    assert label_speakers([], direction="incoming") == []


def test_cues_are_explainable() -> None:
    names = {
        cue.name for cue in matched_cues("Сколько стоит приём? У меня болит спина.", index=4, direction="incoming")
    }
    assert {"asks the price", "about themself", "symptoms"} <= names
    assert cue_score("Клиника «Здоровье», чем могу помочь?", index=0, direction="incoming") > 0
    # "Алло" answers an outgoing call; in an incoming one it is the administrator picking up
    assert cue_score("Алло.", index=0, direction="outgoing") < 0
    assert cue_score("Алло.", index=0, direction="incoming") == 0


def test_labelled_lines_and_dialogue() -> None:
    lines = labelled_lines(["Клиника «Здоровье», слушаю вас.", "Хочу записаться."], [A, P])
    assert lines == [
        {"speaker": A, "text": "Клиника «Здоровье», слушаю вас."},
        {"speaker": P, "text": "Хочу записаться."},
    ]
    assert format_dialogue(lines) == "Администратор: Клиника «Здоровье», слушаю вас.\nПациент: Хочу записаться."
    with pytest.raises(ValueError, match="2 lines but 1 labels"):
        labelled_lines(["a", "b"], [A])
