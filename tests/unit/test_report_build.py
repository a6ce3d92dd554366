"""The report built against the stub OpenAI (real HTTP, the official client): every count from the call items,
the same report however the range was chunked, model answers checked, retried, failed, and counted."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest

from callsight.report import (
    ChunkThemes,
    Recommendation,
    RecRef,
    Report,
    ReportFailed,
    ThemeWriter,
    build_report,
    compute_stats,
    estimate_tokens,
    recommendations_of,
)
from callsight.report.themes import OTHER_TITLE, actions_data
from infra.stubs.clinic_calls import MSK, administrator, generate_calls
from infra.stubs.openai import OpenAIStub, analyze_transcript, recommendation_theme
from tests.unit.test_report_stats import END, REC_POOL, START, make_calls, odd_items

MODEL = "gpt-4.1-mini"
KEY = "stub-openai-key"
#: distinct texts no stub theme matches: many themes, so a small prompt budget merges in levels
PARKING = tuple(f"Напомните пациенту про парковку у корпуса {n}." for n in range(30))


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=0, api_key=KEY)
    stub.reset_stats()


def _client(stub: OpenAIStub, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=stub.base_url, max_retries=0, timeout=20)


def _chunked(writer: ThemeWriter, calls: list[dict[str, Any]], size: int) -> list[ChunkThemes]:
    """The MAP step as the pipeline runs it: each chunk's themes through JSON (S3) and back."""
    chunks = []
    for start in range(0, len(calls), size):
        recs = [rec for call in calls[start:start + size] for rec in recommendations_of(call)]
        stored = json.dumps(writer.theme_chunk(recs).model_dump(mode="json"))
        chunks.append(ChunkThemes.model_validate(json.loads(stored)))
    return chunks


def _report(stub: OpenAIStub, calls: list[Any], *, size: int, max_prompt_tokens: int = 12_000) -> Report:
    writer = ThemeWriter(_client(stub), model=MODEL, max_prompt_tokens=max_prompt_tokens)
    chunks = _chunked(writer, [c for c in calls if isinstance(c, dict)], size)
    return build_report(client_id="clinic-1", start_date=START, end_date=END, calls=calls, chunks=chunks,
                        writer=writer, model=MODEL)


def _realistic_calls() -> list[dict[str, Any]]:
    """The demo clinic's calls, analysed by the stub's own analysis of their transcripts."""
    items = []
    for call in generate_calls(260, now=datetime(2026, 12, 1, tzinfo=UTC)):
        admin = administrator(call.responsible_user_id)
        moment = datetime.fromtimestamp(call.created_at, MSK)
        item: dict[str, Any] = {
            "call_id": f"leads-{call.note_id}", "day": "2026-11-15", "call_time": moment.isoformat(),
            "direction": "incoming" if call.incoming else "outgoing", "duration": call.duration,
            "call_status": call.call_status, "administrator": admin.name if admin else ""}
        if call.scenario is not None:
            item["analyze_status"] = "success"
            item["analysis"] = analyze_transcript(call.scenario.labelled_transcript())
        items.append(item)
    return items


def _expected_themes(calls: list[Any]) -> dict[str, set[str]]:
    """The stub's grouping redone from the call items: theme key -> the analysed calls with such a text."""
    themes: dict[str, set[str]] = defaultdict(set)
    seen: set[str] = set()
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("call_id"), str) or call["call_id"] in seen:
            continue
        seen.add(call["call_id"])
        analysis = call.get("analysis")
        if call.get("analyze_status") != "success" or not isinstance(analysis, dict):
            continue
        texts = analysis.get("recommendations")
        for text in texts if isinstance(texts, list) else []:
            if isinstance(text, str) and text.strip():
                themes[recommendation_theme(" ".join(text.split()))[0]].add(call["call_id"])
    return themes


def _counts(report: Report) -> dict[str, Any]:
    """Every count of a report (not its wording, time or usage)."""
    dumped = report.model_dump(mode="json", exclude={"generated_at", "usage", "actions", "summary"})
    dumped["problems"] = sorted((recommendation_theme(p["title"])[0], p["calls"], p["share"], p["rank"],
                                 [e["call_id"] for e in p["examples"]]) for p in dumped["problems"])
    return dumped


# ------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("dataset", ["generated", "realistic"])
def test_every_count_comes_from_the_call_items(stub: OpenAIStub, dataset: str) -> None:
    calls: list[Any] = make_calls(500, 5, REC_POOL + PARKING[:6]) if dataset == "generated" else _realistic_calls()
    calls += odd_items([c for c in calls if isinstance(c, dict)])
    report = _report(stub, calls, size=10_000)
    stats = compute_stats(calls, start_date=START, end_date=END)
    expected = _expected_themes(calls)

    assert report.total_calls == stats.total_calls and report.analysed_calls == stats.analysed_calls
    assert {recommendation_theme(p.title)[0]: p.calls for p in report.problems} == {
        key: len(ids) for key, ids in expected.items()}
    assert report.folded_calls == report.calls_with_recommendations == len(set().union(*expected.values()))
    assert [p.rank for p in report.problems] == list(range(1, len(report.problems) + 1))
    assert [(-p.calls, p.title.casefold()) for p in report.problems] == sorted(
        (-p.calls, p.title.casefold()) for p in report.problems)
    for problem in report.problems:
        members = expected[recommendation_theme(problem.title)[0]]
        assert problem.share == pytest.approx(len(members) / report.analysed_calls, abs=0.00005)
        assert len(problem.examples) == min(3, len(members))
        assert {e.call_id for e in problem.examples} <= members
        assert all(e.quote for e in problem.examples)
    for field in ("administrators", "call_types", "booking", "missed_opportunities", "missed_by_hour", "skipped"):
        assert getattr(report, field) == getattr(stats, field), field
    assert len(report.problems) >= 7 and 3 <= len(report.actions) <= 5
    assert [a.priority for a in report.actions] == list(range(1, len(report.actions) + 1))
    assert report.problems[0].title in report.actions[0].reason  # the stub words its actions from the prompt
    assert str(report.problems[0].calls) in report.actions[0].reason


def test_many_small_chunks_give_the_one_chunk_report(stub: OpenAIStub) -> None:
    calls = make_calls(400, 11, REC_POOL + PARKING)
    one = _report(stub, calls, size=10_000)
    assert one.usage.requests == 2  # one merge, the actions
    stub.reset_stats()

    writer = ThemeWriter(_client(stub), model=MODEL, max_prompt_tokens=1000)
    chunks = _chunked(writer, calls, 60)
    map_requests = writer.usage.requests
    assert map_requests == sum(c.requests for c in chunks) > len(chunks)  # chunks split into several prompts
    many = build_report(client_id="clinic-1", start_date=START, end_date=END, calls=calls, chunks=chunks,
                        writer=writer, model=MODEL)
    assert many.usage.requests > 2  # the merge went in groups
    assert writer.usage.requests == map_requests + many.usage.requests == stub.stats()["completions"]
    assert writer.usage.largest_prompt_tokens <= 1000
    assert _counts(many) == _counts(one)
    assert {p.title for p in many.problems} == {p.title for p in one.problems}


def test_a_range_without_analysed_calls_asks_nothing(stub: OpenAIStub) -> None:
    calls = [c for c in make_calls(60, 3) if c.get("analyze_status") != "success"]
    report = _report(stub, calls, size=100)
    assert report.total_calls == len(calls) and report.analysed_calls == report.folded_calls == 0
    assert report.problems == [] and report.actions == [] and report.summary
    assert report.usage.requests == 0 and stub.stats()["requests"] == 0


def test_stale_references_are_not_counted(stub: OpenAIStub) -> None:
    calls = make_calls(80, 8)
    writer = ThemeWriter(_client(stub), model=MODEL)
    chunk = _chunked(writer, calls, 1000)[0]
    analysed = next(c for c in calls if recommendations_of(c))
    ghost = ChunkThemes.model_validate({"themes": [{"title": "Призрак", "advice": "", "refs": [
        {"call_id": "leads-deleted", "position": 0},
        {"call_id": analysed["call_id"], "position": 99}]}]})
    report = build_report(client_id="c", start_date=START, end_date=END, calls=calls, chunks=[chunk, ghost],
                          writer=writer, model=MODEL)
    assert "Призрак" not in {p.title for p in report.problems}
    assert report.folded_calls == compute_stats(calls).calls_with_recommendations


def test_report_round_trips_through_json(stub: OpenAIStub) -> None:
    calls = make_calls(150, 2)
    report = _report(stub, calls, size=40)
    dumped = json.loads(json.dumps(report.model_dump(mode="json")))
    assert Report.model_validate(dumped) == report
    assert {"client_id", "start_date", "end_date", "generated_at", "model", "total_calls", "analysed_calls",
            "folded_calls", "problems", "administrators", "call_types", "booking", "missed_opportunities",
            "missed_by_hour", "actions", "summary", "definitions"} <= set(dumped)
    assert dumped["start_date"] == START.isoformat() and dumped["end_date"] == END.isoformat()
    assert datetime.fromisoformat(dumped["generated_at"]).utcoffset() == UTC.utcoffset(None)
    assert set(dumped["problems"][0]) == {"rank", "title", "advice", "calls", "share", "examples"}
    assert {"call_id", "call_time", "administrator", "quote"} <= set(dumped["problems"][0]["examples"][0])
    assert all(isinstance(text, str) and text for text in dumped["definitions"].values())


# ------------------------------------------------------------------------- the LLM's answers


class Scripted:
    """An OpenAI endpoint answering the given contents in turn (the last one again), through the official
    client (httpx MockTransport), recording each request's JSON body."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        content = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}})

    def writer(self, **options: Any) -> ThemeWriter:
        client = openai.OpenAI(api_key="sk-test-key", base_url="http://llm.test/v1", max_retries=0,
                               http_client=httpx.Client(  # type: ignore[arg-type]  # openai 3 takes httpx too
                                   transport=httpx.MockTransport(self._handle)))
        return ThemeWriter(client, model=MODEL, **options)

    def user_lines(self, index: int = -1) -> list[str]:
        return str(self.requests[index]["messages"][-1]["content"]).splitlines()[1:]


def _recs(*texts: str) -> list[Recommendation]:
    return [Recommendation(call_id=f"leads-{n // 2}", position=n % 2, text=text) for n, text in enumerate(texts)]


def _refs(theme: Any) -> list[tuple[str, int]]:
    return [(ref.call_id, ref.position) for ref in theme.refs]


def test_item_numbers_out_of_range_or_twice_are_handled() -> None:
    llm = Scripted({"themes": [
        {"title": "Приветствие", "advice": "Здоровайтесь.", "items": [1, 2, 2, 9, 0, -3]},
        {"title": "Запись", "advice": "Предлагайте запись.", "items": [2, 3]},
        {"title": "Пустая", "advice": "", "items": [42]}]})
    recs = _recs("Здоровайтесь.", "Называйте клинику.", "здоровайтесь", "Предлагайте запись.", "Говорите медленнее.")
    chunk = llm.writer().theme_chunk([*recs, recs[0]])  # a recommendation given twice counts once
    assert llm.user_lines() == ["1. Здоровайтесь.", "2. Называйте клинику.", "3. Предлагайте запись.",
                                "4. Говорите медленнее."]  # identical texts sent once
    assert [(t.title, _refs(t)) for t in chunk.themes] == [
        ("Приветствие", [("leads-0", 0), ("leads-1", 0), ("leads-0", 1)]),
        ("Запись", [("leads-1", 1)]),
        (OTHER_TITLE, [("leads-2", 0)])]
    assert (chunk.recommendations, chunk.texts, chunk.requests) == (5, 4, 1)
    body = llm.requests[0]
    assert "temperature" not in body and body["model"] == MODEL
    assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"]


def test_merge_members_out_of_range_or_twice_are_handled() -> None:
    llm = Scripted({"themes": [{"title": "Приветствие", "advice": "", "members": [1, 1, 7]},
                               {"title": "Снова", "advice": "Совет.", "members": [1, 2]}]})
    def refs(*calls: str) -> list[dict[str, Any]]:
        return [{"call_id": call, "position": 0} for call in calls]

    chunk = ChunkThemes.model_validate({"themes": [  # numbered by calls, the most first
        {"title": "Говорите медленнее", "advice": "Медленнее.", "refs": refs("c")},
        {"title": "Здоровайтесь", "advice": "Здоровайтесь.", "refs": refs("a", "b", "c")},
        {"title": "Представляйтесь", "advice": "Называйте имя.", "refs": refs("b", "d")}]})
    merged = llm.writer().merge([chunk])
    assert [(t.title, t.advice, _refs(t)) for t in merged] == [
        ("Приветствие", "Здоровайтесь.", [("a", 0), ("b", 0), ("c", 0)]),  # no advice given: the member's
        ("Снова", "Совет.", [("b", 0), ("d", 0)]),
        ("Говорите медленнее", "Медленнее.", [("c", 0)])]  # taken by no merged theme: kept as it is
    lines = [json.loads(line.split(". ", 1)[1]) for line in llm.user_lines()]
    assert lines == [{"title": "Здоровайтесь", "advice": "Здоровайтесь.", "calls": 3},
                     {"title": "Представляйтесь", "advice": "Называйте имя.", "calls": 2},
                     {"title": "Говорите медленнее", "advice": "Медленнее.", "calls": 1}]


@pytest.mark.parametrize("bad", [
    "not json at all",
    {"themes": [{"title": "x", "advice": "y"}]},  # items missing
    {"themes": [{"title": "x", "advice": "y", "items": [1]}], "note": "extra"},
    {"themes": [{"title": "x", "advice": "y", "items": [99]}]},  # none of the numbers is in the list
])
def test_an_invalid_answer_is_asked_again(bad: Any) -> None:
    good = {"themes": [{"title": "Вежливость", "advice": "Будьте вежливы.", "items": [1, 2]}]}
    llm = Scripted(bad, good)
    writer = llm.writer()
    chunk = writer.theme_chunk(_recs("Будьте вежливы.", "Благодарите за звонок."))
    assert [t.title for t in chunk.themes] == ["Вежливость"]
    assert (writer.usage.requests, writer.usage.invalid_answers) == (2, 1)
    parses = isinstance(bad, dict) and "note" not in bad and "items" in bad["themes"][0]
    assert writer.usage.completion_tokens == (112 if parses else 56)  # a failed parse gives no usage...
    assert writer.usage.largest_prompt_tokens == 1234 < writer.usage.prompt_tokens  # ...its prompt is estimated

    failing = Scripted(bad)
    writer = failing.writer(attempts=3)
    with pytest.raises(ReportFailed, match="3 attempt"):
        writer.theme_chunk(_recs("Будьте вежливы."))
    assert len(failing.requests) == writer.usage.requests == writer.usage.invalid_answers == 3


def test_actions_are_ordered_capped_and_told_the_figures(stub: OpenAIStub) -> None:
    calls = make_calls(200, 6)
    problems = _report(stub, calls, size=1000).problems
    stats = compute_stats(calls)
    llm = Scripted({"summary": " Итоги. ", "actions": [
        {"priority": p, "action": f"Действие {p}", "reason": f"Причина {p}"} for p in (3, 1, 2, 7, 5, 4, 6)]
        + [{"priority": 0, "action": "  ", "reason": "пустое действие"}]})
    actions = llm.writer().write_actions(stats, problems)
    assert actions.summary == "Итоги."
    assert [(a.priority, a.action) for a in actions.actions] == [(n, f"Действие {n}") for n in range(1, 6)]
    told = json.loads(llm.user_lines()[0])
    assert told == json.loads(json.dumps(actions_data(stats, problems[:10])))
    assert (told["total_calls"], told["analysed_calls"]) == (stats.total_calls, stats.analysed_calls)
    assert told["booking_conversion"]["booked"] == stats.booking.booked_calls
    assert told["missed_opportunities"]["calls"] == stats.missed_opportunities.count
    assert [(p["title"], p["calls"]) for p in told["problems"]] == [(p.title, p.calls) for p in problems[:10]]
    schema = json.dumps(llm.requests[0]["response_format"]["json_schema"]["schema"])
    assert '"number"' not in schema and schema.count('"integer"') == 1  # wording only, and the priority


def test_prompts_fit_the_budget() -> None:
    llm = Scripted({"themes": [{"title": "Все", "advice": "", "items": list(range(1, 400))}]})
    writer = llm.writer(max_prompt_tokens=1500)
    texts = [f"Рекомендация номер {n}: " + "подробно " * (n % 7) for n in range(300)] + ["очень длинная " * 2000]
    chunk = writer.theme_chunk(_recs(*texts))
    assert chunk.requests == len(llm.requests) > 1 and chunk.recommendations == 301
    for body in llm.requests:
        prompt = sum(estimate_tokens(m["content"]) + 4 for m in body["messages"]) + 3
        schema = estimate_tokens(json.dumps(body["response_format"]["json_schema"]["schema"], ensure_ascii=False))
        assert prompt + schema <= 1500
    assert sorted(ref.position + 2 * int(ref.call_id.split("-")[1]) for t in chunk.themes for ref in t.refs) == list(
        range(301))  # every recommendation is in a theme, the truncated one too
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        llm.writer(max_prompt_tokens=300)


# ------------------------------------------------------------------------------------ errors


def test_api_errors_name_the_status_never_the_key(stub: OpenAIStub) -> None:
    writer = ThemeWriter(_client(stub, "sk-secret-report-key-123456"), model=MODEL)
    with pytest.raises(ReportFailed, match="HTTP 401") as failed:
        writer.theme_chunk(_recs("Будьте вежливы."))
    assert "secret" not in str(failed.value) and "3456" not in str(failed.value)
    assert writer.usage.requests == 1  # not retried

    stub.configure(fault_rate=1.0, fault_kinds=["500"])
    writer = ThemeWriter(_client(stub), model=MODEL)
    with pytest.raises(ReportFailed, match="HTTP 500"):
        writer.merge([ChunkThemes.model_validate({"themes": [
            {"title": t, "advice": "", "refs": [{"call_id": t, "position": 0}]} for t in ("А", "Б")]})])


def test_answers_failing_validation_are_retried_then_fail(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=["invalid_json"])
    writer = ThemeWriter(_client(stub), model=MODEL, attempts=4)
    with pytest.raises(ReportFailed, match="4 attempt"):
        writer.theme_chunk(_recs("Будьте вежливы.", "Представляйтесь."))
    assert stub.stats()["requests"] == writer.usage.requests == writer.usage.invalid_answers == 4


def test_usage_counts_requests_and_tokens(stub: OpenAIStub) -> None:
    calls = make_calls(300, 12, REC_POOL + PARKING)
    writer = ThemeWriter(_client(stub), model=MODEL, max_prompt_tokens=1200)
    chunks = _chunked(writer, calls, 50)
    report = build_report(client_id="c", start_date=START, end_date=END, calls=calls, chunks=chunks, writer=writer,
                          model=MODEL, now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    stats = stub.stats()
    assert writer.usage.requests == stats["completions"] == stats["requests"]
    assert writer.usage.prompt_tokens == stats["prompt_tokens"]  # the API's numbers when it gives them
    assert writer.usage.completion_tokens == stats["completion_tokens"]
    assert 0 < writer.usage.largest_prompt_tokens <= 1200 and writer.usage.max_prompt_tokens <= 1200
    assert report.usage.requests == writer.usage.requests - sum(c.requests for c in chunks)
    assert report.generated_at == "2026-12-01T09:30:00Z"


def test_chunk_refs_point_at_the_calls(stub: OpenAIStub) -> None:
    calls = make_calls(100, 13)
    writer = ThemeWriter(_client(stub), model=MODEL)
    recs = [rec for call in calls for rec in recommendations_of(call)]
    chunk = writer.theme_chunk(recs)
    refs = [ref for theme in chunk.themes for ref in theme.refs]
    assert sorted(refs, key=lambda r: (r.call_id, r.position)) == sorted(
        (RecRef(call_id=r.call_id, position=r.position) for r in recs), key=lambda r: (r.call_id, r.position))
    assert chunk.recommendations == len(recs) and chunk.texts < len(recs)
    assert ChunkThemes.model_validate_json(chunk.model_dump_json()) == chunk


def test_merge_goes_hierarchical_until_one_prompt_holds_all(stub: OpenAIStub) -> None:
    names = ("Приветствие", "Выявление потребности", "Врач и услуга", "Работа с возражениями", "Предложение записи",
             "Следующий шаг", "Вежливость")
    chunks = [ChunkThemes.model_validate({"themes": [
        {"title": f"{name} — вариант {k}", "advice": f"Совет {k}.",
         "refs": [{"call_id": f"call-{n}-{k}", "position": 0}, {"call_id": "call-shared", "position": n}]}
        for n, name in enumerate(names)]}) for k in range(12)]
    prompts: list[int] = []  # the themes each merge prompt listed

    class Recording(ThemeWriter):
        def _ask(self, what: str, messages: Any, answer_type: Any, check: Any) -> Any:
            prompts.append(len(str(messages[-1]["content"]).splitlines()) - 1)
            return super()._ask(what, messages, answer_type, check)

    writer = Recording(_client(stub), model=MODEL, max_prompt_tokens=1000)
    merged = writer.merge(chunks)
    assert sorted((t.title, len(t.call_ids())) for t in merged) == sorted((name, 13) for name in names)
    assert len(prompts) >= 3 and sum(prompts[:-1]) == 84 and prompts[-1] < 84  # groups, then the merged
    assert writer.usage.requests == len(prompts) == stub.stats()["completions"]
    assert writer.usage.largest_prompt_tokens <= 1000
