"""The stub OpenAI server through the official ``openai`` client: transcriptions, call analyses, errors, faults."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import openai
import pydantic
import pytest
from openai.lib._parsing._completions import type_to_response_format_param

from callsight.analysis.models import CallAnalysis
from infra.stubs.audio import make_wav
from infra.stubs.clinic_calls import CALL_TYPES, DemoCall, generate_calls
from infra.stubs.openai import OpenAIStub, analyze_transcript
from tests.stubs.helpers import running_cli, silence_wav

NOW = datetime(2026, 11, 28, tzinfo=UTC)
KEY = "stub-openai-key"
SYSTEM = "Ты — эксперт по качеству работы администраторов клиники. Оцени звонок по транскрипту."
BOOKING_TYPES = ("booking", "reschedule", "price_question", "test_results")


@pytest.fixture(scope="module")
def answered() -> list[DemoCall]:
    return [call for call in generate_calls(150, now=NOW) if call.scenario is not None]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


def _client(stub: OpenAIStub, **options: Any) -> openai.OpenAI:
    settings: dict[str, Any] = {"api_key": KEY, "max_retries": 0, "timeout": 10.0, **options}
    return openai.OpenAI(base_url=stub.url + "/v1", **settings)


@pytest.fixture
def client(stub: OpenAIStub) -> Iterator[openai.OpenAI]:
    with _client(stub) as value:
        yield value


def _messages(transcript: str) -> list[Any]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Транскрипт звонка:\n{transcript}"},
    ]


# ------------------------------------------------------------------------------ transcriptions


def test_demo_recording_is_transcribed_to_its_script(client: openai.OpenAI, answered: list[DemoCall]) -> None:
    for call in answered[:6]:
        assert call.scenario is not None
        result = client.audio.transcriptions.create(
            model="gpt-transcribe", file=(f"{call.uniq}.wav", make_wav(call)), language="ru", prompt="Клиника"
        )
        assert result.text == call.scenario.transcript()
        assert result.languages is not None and result.languages[0].code == "ru"
    call = answered[0]
    assert call.scenario is not None
    for model in ("whisper-1", "gpt-4o-mini-transcribe-2025-12-15"):  # deterministic, whatever the model
        again = client.audio.transcriptions.create(model=model, file=("a.wav", make_wav(call)))
        assert again.text == call.scenario.transcript()
    text = client.audio.transcriptions.create(
        model="gpt-transcribe", file=("a.wav", make_wav(call)), response_format="text"
    )
    assert isinstance(text, str) and text.rstrip("\n") == call.scenario.transcript()


def test_verbose_json_has_a_segment_per_line_over_the_real_duration(
    client: openai.OpenAI, answered: list[DemoCall]
) -> None:
    call = max(answered, key=lambda c: len(c.scenario.script) if c.scenario else 0)
    assert call.scenario is not None
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=(f"{call.uniq}.wav", make_wav(call)),
        response_format="verbose_json",
        timestamp_granularities=["segment", "word"],
    )
    assert result.language == "russian"
    assert result.duration == pytest.approx(call.duration)
    segments = result.segments or []
    assert [s.text for s in segments] == [text for _, text in call.scenario.script]
    assert [s.id for s in segments] == list(range(len(segments)))
    assert segments[0].start == 0
    for before, after in itertools.pairwise(segments):
        assert before.start < before.end <= after.start
    assert call.duration * 0.8 < segments[-1].end <= call.duration
    assert result.words and result.words[0].word == call.scenario.script[0][1].split()[0].strip(",.!?")


def test_wav_without_metadata_gets_a_deterministic_generic_text(client: openai.OpenAI) -> None:
    audio = silence_wav(2.0)
    first = client.audio.transcriptions.create(model="gpt-transcribe", file=("part-001.wav", audio))
    second = client.audio.transcriptions.create(model="gpt-transcribe", file=("part-001.wav", audio))
    assert first.text and first.text == second.text
    assert any("а" <= char <= "я" for char in first.text.lower())
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("part-001.wav", audio), response_format="verbose_json"
    )
    assert verbose.duration == pytest.approx(2.0)


def test_transcription_errors_match_openai(stub: OpenAIStub, client: openai.OpenAI, answered: list[DemoCall]) -> None:
    wav = make_wav(answered[0])
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        _client(stub, api_key="sk-wrong-key-123456").audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert wrong_key.value.status_code == 401
    assert wrong_key.value.code == "invalid_api_key"

    raw = httpx.post(stub.url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "whisper-1"})
    assert raw.status_code == 401
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}

    with pytest.raises(openai.NotFoundError) as unknown:
        client.audio.transcriptions.create(model="whisper-2", file=("a.wav", wav))
    assert unknown.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as bad_type:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"just some text, not audio"))
    assert bad_type.value.code == "invalid_value" and bad_type.value.param == "file"
    with pytest.raises(openai.BadRequestError, match="corrupted"):
        client.audio.transcriptions.create(model="whisper-1", file=("call.mp3", b"\x00" * 4000))
    with pytest.raises(openai.BadRequestError, match="file format"):
        client.audio.transcriptions.create(model="whisper-1", file=wav)  # no file name: no extension
    with pytest.raises(openai.BadRequestError) as bad_format:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("a.wav", wav),
            response_format="xml",  # type: ignore[call-overload]
        )
    assert bad_format.value.param == "response_format"
    with pytest.raises(openai.BadRequestError, match="not compatible"):  # gpt-4o transcribe models: json only
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav), response_format="srt")

    with pytest.raises(openai.APIStatusError) as too_large:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", wav + bytes(26_300_000)))
    assert too_large.value.status_code == 413
    assert "26214400" in too_large.value.message
    assert stub.stats()["by_status"] == {401: 2, 404: 1, 400: 5, 413: 1}


# ------------------------------------------------------------------------------------ analysis


def test_call_analysis_agrees_with_the_scenarios(
    stub: OpenAIStub, client: openai.OpenAI, answered: list[DemoCall]
) -> None:
    seen: set[tuple[str, bool, bool]] = set()
    for index, call in enumerate(answered[:70]):
        scenario = call.scenario
        assert scenario is not None
        if index % 2:  # speaker labels
            transcript = scenario.labelled_transcript()
            messages = _messages(transcript)
        else:  # no labels: the turn order (and the direction, when the prompt names it) tells who speaks
            transcript = scenario.transcript()
            direction = "входящий" if call.incoming else "исходящий"
            header = f"Звонок: {direction}, длительность {call.duration} с." if index % 4 else "Звонок."
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{header}\n\nРасшифровка:\n{transcript}"},
            ]
        completion = client.chat.completions.parse(
            model="gpt-4.1-mini", messages=messages, response_format=CallAnalysis, temperature=0
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop" and choice.message.refusal is None
        analysis = choice.message.parsed
        assert isinstance(analysis, CallAnalysis)
        CallAnalysis.model_validate_json(choice.message.content or "")
        context = f"{call.uniq} {scenario.call_type}\n{transcript}"
        assert analysis.outcome.booked == scenario.booked, context
        assert analysis.call_type == scenario.call_type, context
        criteria = analysis.criteria
        assert (criteria.greeting.score >= 7) == scenario.greeted_properly, context
        assert (criteria.politeness.score >= 7) == scenario.polite, context
        if scenario.call_type in BOOKING_TYPES:
            assert (criteria.booking_offer.score >= 7) == scenario.offered_booking, context
        if criteria.next_step.evidence:
            assert scenario.named_next_step, context
        if scenario.booked and scenario.named_next_step:
            assert criteria.next_step.score >= 7, context
        if scenario.call_type == "complaint":
            assert analysis.patient_sentiment == "negative"
        for criterion in criteria.model_dump().values():  # evidence is a real quote (or "")
            assert criterion["evidence"].rstrip("…") in transcript, context
        weak = [name for name, value in criteria.model_dump().items() if value["score"] < 7]
        assert len(analysis.recommendations) == len(weak)
        assert 0 <= analysis.overall_score <= 100 and analysis.summary
        seen.add((scenario.call_type, scenario.greeted_properly, scenario.polite))
    assert {call_type for call_type, _, _ in seen} == set(CALL_TYPES)  # every type, good and bad manners
    assert {greeted for _, greeted, _ in seen} == {polite for _, _, polite in seen} == {True, False}
    stats = stub.stats()
    assert stats["completions"] == stats["analyses"] == 70
    assert stats["models"] == {"gpt-4.1-mini": 70}


def test_exemplary_and_careless_calls_are_told_apart() -> None:
    good = analyze_transcript(
        "Администратор: Клиника «Здоровье», администратор Анна, здравствуйте! Чем могу помочь?\n"
        "Пациент: Здравствуйте! Я хотела бы записаться к кардиологу.\n"
        "Администратор: Конечно. Могу записать вас к кардиологу Сергею Александровичу в среду в 10:00. Вам удобно?\n"
        "Пациент: Да, давайте.\n"
        "Администратор: Отлично, вы записаны к кардиологу на среду на 10:00. Консультация — 2 500 рублей. "
        "Накануне придёт SMS с напоминанием.\n"
        "Пациент: Спасибо большое!\n"
        "Администратор: Спасибо за звонок! Всего доброго."
    )
    bad = analyze_transcript("Алло.\nМне бы к кардиологу попасть.\nМест нет. Звоните позже.\nНу ладно...")
    CallAnalysis.model_validate(good)
    CallAnalysis.model_validate(bad)
    assert good["outcome"]["booked"] and not bad["outcome"]["booked"]
    assert good["call_type"] == bad["call_type"] == "booking"
    assert good["overall_score"] >= 85 > 50 > bad["overall_score"]
    assert good["recommendations"] == [] and len(bad["recommendations"]) >= 3
    assert good["patient_sentiment"] == "positive"
    assert good["criteria"]["greeting"]["evidence"].startswith("Клиника «Здоровье»")
    assert bad["criteria"]["booking_offer"] == {"score": 0, "evidence": ""}


def test_other_schemas_get_a_minimal_valid_instance(client: openai.OpenAI) -> None:
    class Item(pydantic.BaseModel):
        name: str
        weight: float = pydantic.Field(ge=0.5)

    class Other(pydantic.BaseModel):
        title: str
        count: int = pydantic.Field(ge=3, le=9)
        level: Literal["low", "high"]
        ok: bool
        note: str | None
        items: list[Item]
        main: Item

    result = client.chat.completions.parse(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Заполни форму."}], response_format=Other
    )
    parsed = result.choices[0].message.parsed
    assert parsed == Other(title="", count=3, level="low", ok=False, note="", items=[], main=Item(name="", weight=0.5))


def test_recommendations_are_merged_on_request(client: openai.OpenAI) -> None:
    lines = [
        "- Начинайте разговор с приветствия и названия клиники.",
        "- Начинайте разговор с приветствия и названия клиники.",
        "- Представляйтесь: называйте своё имя в начале звонка.",
        "- Предлагайте запись на приём с конкретной датой и временем.",
        "- Следите за тоном: говорите «пожалуйста» и «спасибо».",
    ]
    prompt = "Объедини рекомендации администраторам за неделю в один короткий отчёт:\n" + "\n".join(lines)
    text = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    report = text.choices[0].message.content or ""
    assert report.startswith("Сводные рекомендации")
    assert "Приветствие" in report and "встречается 3 раза" in report and "Вежливость" in report

    class Report(pydantic.BaseModel):
        report: str
        recommendations: list[str]

    structured = (
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], response_format=Report
        )
        .choices[0]
        .message.parsed
    )
    assert structured is not None and len(structured.recommendations) == 3
    assert structured.recommendations[0].startswith("Приветствие:")

    as_json = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt + "\nОтветь в JSON."}],
        response_format={"type": "json_object"},
    )
    assert json.loads(as_json.choices[0].message.content or "")["recommendations"]


def test_chat_request_errors_match_openai(stub: OpenAIStub, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="json"):  # json_object needs the word "json" in the messages
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Привет"}],
            response_format={"type": "json_object"},
        )
    loose: dict[str, object] = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "Loose", "schema": loose, "strict": True}},
        )
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gtp-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found"
    assert client.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "x"}]).choices
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="whisper-1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        _client(stub, api_key="nope").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.LengthFinishReasonError):  # a too small token limit cuts the JSON short
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=_messages("Алло.\nАлло."), response_format=CallAnalysis, max_tokens=20
        )
    snapshot = client.chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "x"}]
    )
    assert snapshot.object == "chat.completion" and snapshot.model == "gpt-4o-mini-2024-07-18"
    assert snapshot.usage is not None and snapshot.usage.total_tokens > 0
    stub.configure(chat_models=["gpt-4.1-mini"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    stub.configure(chat_models=["*"])
    assert client.chat.completions.create(model="qwen-local", messages=[{"role": "user", "content": "x"}]).choices


def test_models_are_listed(client: openai.OpenAI) -> None:
    names = [model.id for model in client.models.list()]
    assert {"gpt-transcribe", "whisper-1", "gpt-4o-mini"} <= set(names)
    assert client.models.retrieve("gpt-transcribe").id == "gpt-transcribe"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# -------------------------------------------------------------------------------------- faults


def test_429_is_retried_then_raised(stub: OpenAIStub, answered: list[DemoCall]) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=["429"], retry_after=0.2)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as error:
        _client(stub, max_retries=2).audio.transcriptions.create(
            model="gpt-transcribe", file=("a.wav", make_wav(answered[0]))
        )
    assert time.monotonic() - started >= 0.4  # two waits of the retry-after
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.response.headers["retry-after"] == "0.2"
    stats = stub.stats()
    assert stats["requests"] == 3 and stats["faults"] == {"429": 3} and stats["by_status"] == {429: 3}


def test_500_is_retried_then_raised(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=("500",))
    with pytest.raises(openai.InternalServerError) as error:
        _client(stub, max_retries=1).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert error.value.type == "server_error"
    assert stub.stats()["faults"] == {"500": 2}


def test_invalid_json_fault_breaks_the_content(stub: OpenAIStub, answered: list[DemoCall]) -> None:
    assert answered[0].scenario is not None
    messages = _messages(answered[0].scenario.labelled_transcript())
    stub.configure(fault_rate=1.0, fault_kinds=["invalid_json"])
    client = _client(stub)
    schema = type_to_response_format_param(CallAnalysis)
    for _ in range(6):  # both flavours: JSON cut short, and JSON that breaks the schema
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages, response_format=schema)
        assert completion.choices[0].finish_reason == "stop"
        with pytest.raises(pydantic.ValidationError):
            CallAnalysis.model_validate_json(completion.choices[0].message.content or "")
    with pytest.raises(pydantic.ValidationError):
        client.chat.completions.parse(model="gpt-4o-mini", messages=messages, response_format=CallAnalysis)
    with pytest.raises(json.JSONDecodeError):  # a transcription body cut short
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", make_wav(answered[0])))
    assert stub.stats()["analyses"] == 0


def test_timeout_fault_outlasts_the_client_timeout(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=["timeout"], timeout_seconds=5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _client(stub, timeout=0.3).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert time.monotonic() - started < 2
    stub.configure(timeout_seconds=0.2)
    with pytest.raises(openai.InternalServerError):  # held, then answered 500
        _client(stub).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])


def test_fault_rate_is_a_seeded_share(answered: list[DemoCall]) -> None:
    outcomes: list[list[int]] = []
    for _ in range(2):
        with (
            OpenAIStub(fault_rate=0.3, fault_kinds=["500", "429"], retry_after=0.2, seed=7) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as http,
        ):
            statuses = [http.get("/v1/models").status_code for _ in range(40)]
            outcomes.append(statuses)
            assert server.stats()["by_status"].get(200, 0) == statuses.count(200)
    assert outcomes[0] == outcomes[1]
    assert 4 <= len([s for s in outcomes[0] if s != 200]) <= 20
    assert {429, 500} <= set(outcomes[0])


def test_latency_is_added_to_every_request(stub: OpenAIStub, client: openai.OpenAI) -> None:
    stub.configure(latency_ms=150)
    started = time.monotonic()
    client.models.list()
    with pytest.raises(openai.AuthenticationError):
        _client(stub, api_key="bad").models.list()
    assert time.monotonic() - started >= 0.3


def test_stats_count_and_reset(stub: OpenAIStub, client: openai.OpenAI, answered: list[DemoCall]) -> None:
    before = time.monotonic()
    client.audio.transcriptions.create(model="gpt-transcribe", file=("a.wav", make_wav(answered[0])))
    client.audio.transcriptions.create(model="whisper-1", file=("b.wav", make_wav(answered[1])))
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Привет"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    stats = stub.stats()
    assert stats["requests"] == 4 and stats["by_status"] == {200: 3, 404: 1}
    assert stats["transcriptions"] == 2 and stats["completions"] == 1 and stats["analyses"] == 0
    assert stats["models"] == {"gpt-transcribe": 1, "whisper-1": 1, "gpt-4o-mini": 1}
    assert len(stats["request_times"]) == 3 and all(t >= before for t in stats["request_times"])
    assert stats["audio_seconds"] == pytest.approx(answered[0].duration + answered[1].duration)
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0 and stats["faults"] == {}
    stub.reset_stats()
    assert stub.stats()["requests"] == 0 and stub.stats()["models"] == {}


def test_knobs_are_validated(stub: OpenAIStub) -> None:
    with pytest.raises(TypeError):
        stub.configure(latency=5)
    with pytest.raises(ValueError):
        stub.configure(fault_rate=1.5)
    with pytest.raises(ValueError):
        stub.configure(fault_kinds=["503"])
    stub.configure(api_key="another-key", transcription_models=["my-whisper"])
    with _client(stub, api_key="another-key") as client:
        assert next(m.id for m in client.models.list()) == "my-whisper"


# ----------------------------------------------------------------------------------- lifecycle


def test_stop_frees_the_port_and_the_server_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    stub = OpenAIStub(fault_rate=1.0, fault_kinds=["timeout"], timeout_seconds=30).start()
    port = stub.port
    with pytest.raises(openai.APITimeoutError):
        _client(stub, timeout=0.2).models.list()
    started = time.monotonic()
    stub.stop()  # does not wait for the held request
    assert time.monotonic() - started < 3
    with OpenAIStub(port=port) as again:
        assert again.port == port
        assert httpx.get(again.url + "/nowhere").json()["error"]["message"] == "Invalid URL (GET /nowhere)"
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_cli_serves_until_sigterm() -> None:
    with running_cli("infra.stubs.openai", "--port", "0") as url:
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200 and response.json()["object"] == "list"
