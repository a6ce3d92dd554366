"""The stub OpenAI's answers to the report's prompts, through the official client: told apart by the schema,
derived from the prompt's content, valid against the schema, and independent of how a range is chunked."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest

from callsight.report import ChunkThemes, Recommendation, ThemeWriter
from callsight.report.themes import ManagerActionsAnswer, MergedThemes, RecommendationThemes
from infra.stubs.openai import OpenAIStub, recommendation_theme, report_schema_kind

KEY = "stub-openai-key"
MODEL = "gpt-4o-mini"
TEXTS = (
    "Начинайте разговор с приветствия и названия клиники.",
    "Представляйтесь: называйте своё имя.",
    "Предлагайте запись на приём с конкретной датой.",
    "Не перебивайте пациента.",
    "не перебивайте пациента!",
    "Следите за тоном: говорите «пожалуйста».",
    "Говорите медленнее.",
    "Уточняйте номер полиса.",
    "Завершайте звонок следующим шагом: SMS-напоминание.",
)


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def client(stub: OpenAIStub) -> Iterator[openai.OpenAI]:
    stub.configure(fault_rate=0)
    with openai.OpenAI(api_key=KEY, base_url=stub.base_url, max_retries=0) as value:
        yield value


def _ask(client: openai.OpenAI, answer_type: type[pydantic.BaseModel], user: str) -> Any:
    completion = client.chat.completions.parse(  # instructions in English: the schema tells the prompt apart
        model=MODEL, messages=[{"role": "system", "content": "Do as the schema says."},
                               {"role": "user", "content": user}], response_format=answer_type)
    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    answer_type.model_validate_json(completion.choices[0].message.content or "")
    return parsed


def test_report_schemas_are_recognised_by_their_properties() -> None:
    for answer_type, kind in ((RecommendationThemes, "themes"), (MergedThemes, "merge"),
                              (ManagerActionsAnswer, "actions")):
        assert report_schema_kind(answer_type.model_json_schema()) == kind

    class Other(pydantic.BaseModel):  # a "themes" list of another shape is not the report's
        themes: list[str]

    assert report_schema_kind(Other.model_json_schema()) is None


def test_map_groups_the_numbered_recommendations(client: openai.OpenAI) -> None:
    lines = "\n".join(f"{n}. {text}" for n, text in enumerate(TEXTS, start=1))
    answer = _ask(client, RecommendationThemes, "Рекомендации:\n" + lines)
    expected: dict[str, list[int]] = defaultdict(list)
    for number, text in enumerate(TEXTS, start=1):
        expected[recommendation_theme(text)[0]].append(number)
    groups = {recommendation_theme(theme.title)[0]: theme.items for theme in answer.themes}
    assert groups == expected and len(groups) == len(answer.themes)
    assert sorted(n for theme in answer.themes for n in theme.items) == list(range(1, len(TEXTS) + 1))
    assert groups[recommendation_theme(TEXTS[3])[0]] == [4, 5]  # the same text but for case and punctuation
    assert {theme.title for theme in answer.themes} >= {"Приветствие", "Предложение записи", "Вежливость"}
    assert all(theme.advice for theme in answer.themes)


def test_merge_joins_themes_with_the_same_title(client: openai.OpenAI) -> None:
    themes = [("Приветствие", "Здоровайтесь.", 3), ("Не перебивайте пациента", "Слушайте.", 2),
              ("приветствие!", "Называйте клинику.", 7), ("Не перебивайте пациента.", "Дослушивайте.", 5),
              ("Говорите медленнее", "Медленнее.", 1)]
    lines = "\n".join(f"{n}. " + json.dumps({"title": t, "advice": a, "calls": c}, ensure_ascii=False)
                      for n, (t, a, c) in enumerate(themes, start=1))
    answer = _ask(client, MergedThemes, "Темы:\n" + lines)
    assert [(t.title, t.advice, t.members) for t in answer.themes] == [
        ("Приветствие", "Называйте клинику.", [1, 3]),  # the advice of the member with the most calls
        ("Не перебивайте пациента", "Дослушивайте.", [2, 4]),
        ("Говорите медленнее", "Медленнее.", [5])]


@pytest.mark.parametrize("problems", [0, 2, 7])
def test_actions_come_from_the_figures_in_the_prompt(client: openai.OpenAI, problems: int) -> None:
    data: dict[str, Any] = {
        "total_calls": 812, "analysed_calls": 640,
        "booking_conversion": {"calls": 300, "booked": 171, "percent": 57.0},
        "missed_opportunities": {"calls": 41, "of_calls": 280, "percent": 14.6},
        "missed_incoming_calls": {"incoming": 500, "missed": 77, "percent": 15.4, "worst_hours": []},
        "administrators": [],
        "problems": [{"rank": n, "title": f"Тема {n}", "advice": f"Совет {n}.", "calls": 100 - n,
                      "percent": round((100 - n) / 6.4, 1)} for n in range(1, problems + 1)]}
    answer = _ask(client, ManagerActionsAnswer, "Итоги:\n" + json.dumps(data, ensure_ascii=False))
    assert [a.priority for a in answer.actions] == list(range(1, len(answer.actions) + 1))
    assert len(answer.actions) == max(3, min(problems, 5))
    for action, problem in zip(answer.actions, data["problems"], strict=False):
        assert action.action == problem["advice"]
        assert problem["title"] in action.reason and str(problem["calls"]) in action.reason
    if problems < 3:
        reasons = " ".join(a.reason for a in answer.actions)
        assert "41" in reasons and ("77" in reasons or problems == 2)
    assert "812" in answer.summary and "640" in answer.summary and "57.0" in answer.summary
    if problems:
        assert "Тема 1" in answer.summary


def test_one_chunk_and_many_chunks_give_the_same_theme_counts(stub: OpenAIStub, client: openai.OpenAI) -> None:
    texts = [*TEXTS, *(f"Напомните про парковку у корпуса {n}." for n in range(40))]
    recs = [Recommendation(call_id=f"leads-{n // 3}", position=n % 3, text=texts[(n * 5) % len(texts)])
            for n in range(600)]

    def counts(chunks: list[ChunkThemes], writer: ThemeWriter) -> dict[str, int]:
        return {recommendation_theme(theme.title)[0]: len(theme.call_ids()) for theme in writer.merge(chunks)}

    whole = ThemeWriter(client, model=MODEL)
    one = counts([whole.theme_chunk(recs)], whole)
    small = ThemeWriter(client, model=MODEL, max_prompt_tokens=950)
    pieces = [ChunkThemes.model_validate_json(small.theme_chunk(recs[start:start + 150]).model_dump_json())
              for start in range(0, len(recs), 150)]
    assert small.usage.requests > len(pieces) > 1  # chunks split into several prompts
    assert counts(pieces, small) == one
    expected: dict[str, set[str]] = defaultdict(set)
    for rec in recs:
        expected[recommendation_theme(rec.text)[0]].add(rec.call_id)
    assert one == {key: len(ids) for key, ids in expected.items()}


def test_a_report_answer_can_be_broken_on_request(stub: OpenAIStub, client: openai.OpenAI) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=["invalid_json"])
    with pytest.raises((pydantic.ValidationError, ValueError)):
        client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "1. Говорите медленнее."}],
                                      response_format=RecommendationThemes)
    stub.configure(fault_rate=0)
