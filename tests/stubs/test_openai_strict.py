"""The stub OpenAI refuses what the real service refuses, through the official client: per-model response formats,
hints and prompts, the duration and size limits, strict-schema rules and reasoning models' sampling parameters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.lib._parsing._completions import type_to_response_format_param

from callsight.analysis.models import CallAnalysis
from callsight.llm import RetryPolicy, with_retries
from callsight.report.themes import ManagerActionsAnswer, MergedThemes, RecommendationThemes
from infra.stubs.audio import build_recording, speech_timeline
from infra.stubs.clinic_calls import RecordingFormat
from infra.stubs.openai import (
    GPT4O_MAX_AUDIO_SECONDS,
    MAX_UPLOAD_BYTES,
    OpenAIStub,
    _strict_schema_problem,
    transcription_rules,
)
from tests.stubs.helpers import silence_wav

KEY = "stub-openai-key"
SCRIPT = [
    ("administrator", "Клиника «Здоровье», администратор Анна, здравствуйте."),
    ("patient", "Здравствуйте, хочу записаться на МРТ колена."),
    ("administrator", "Могу предложить четверг, десять утра. Записываю?"),
    ("patient", "Да, записывайте, спасибо."),
]
X = [{"role": "user", "content": "x"}]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def client(stub: OpenAIStub) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stub.base_url, api_key=KEY, max_retries=0, timeout=60.0) as value:
        yield value


@pytest.fixture(scope="module")
def audio_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


def _recording(seconds: float, fmt: RecordingFormat, cache: Path, *, bitrate_kbps: int = 16) -> bytes:
    lines = speech_timeline(SCRIPT, seconds, f"strict-{seconds}")
    metadata = {"uniq": f"strict-{seconds}", "duration": seconds, "lines": lines}
    return build_recording(
        metadata, seconds=seconds, lines=lines, seed=f"strict-{seconds}", fmt=fmt, bitrate_kbps=bitrate_kbps,
        cache=cache,
    )


def _message(error: pytest.ExceptionInfo[openai.APIStatusError]) -> str:
    """The error's own message (the SDK's ``message`` is prefixed with "Error code: N - ")."""
    body = error.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    return str(body["message"])


# ---------------------------------------------------------------------------------- transcriptions


def test_response_formats_are_per_model(client: openai.OpenAI) -> None:
    wav = silence_wav(1.0)
    for model in ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15"):
        for refused in ("verbose_json", "text", "srt", "vtt"):
            with pytest.raises(openai.BadRequestError) as error:
                client.audio.transcriptions.create(model=model, file=("a.wav", wav), response_format=refused)
            assert error.value.param == "response_format" and error.value.code == "unsupported_value"
            assert f"'{refused}' is not compatible with model '{model}'. Use 'json' instead." in _message(error)
        assert client.audio.transcriptions.create(model=model, file=("a.wav", wav), response_format="json").text
    for refused in ("verbose_json", "srt", "vtt"):  # segments and subtitles are whisper-1's
        with pytest.raises(openai.BadRequestError, match="not compatible"):
            client.audio.transcriptions.create(model="gpt-transcribe", file=("a.wav", wav), response_format=refused)  # type: ignore[call-overload]
    assert client.audio.transcriptions.create(model="gpt-transcribe", file=("a.wav", wav), response_format="text")
    for accepted in ("json", "text", "srt", "verbose_json", "vtt"):
        assert client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format=accepted)
    with pytest.raises(openai.BadRequestError, match="not compatible"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="diarized_json")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.audio.transcriptions.create(model="gpt-5-transcribe", file=("a.wav", wav))
    assert unknown.value.code == "model_not_found"


def test_keywords_and_languages_go_to_gpt_transcribe_only(stub: OpenAIStub, client: openai.OpenAI) -> None:
    wav = silence_wav(1.0)
    answer = client.audio.transcriptions.create(
        model="gpt-transcribe", file=("a.wav", wav), keywords=["МРТ", "Здоровье"], languages=["ru"], language="ru"
    )
    assert answer.text
    entry = stub.requests_log()[-1]
    assert entry["status"] == 200 and entry["model"] == "gpt-transcribe"
    assert entry["fields"]["keywords[]"] == ["МРТ", "Здоровье"]
    assert entry["fields"]["languages[]"] == ["ru"] and entry["fields"]["language"] == "ru"
    for model, hint in (("whisper-1", "keywords"), ("gpt-4o-transcribe", "languages")):
        with pytest.raises(openai.BadRequestError) as error:
            client.audio.transcriptions.create(model=model, file=("a.wav", wav), **{hint: ["ru"]})  # type: ignore[call-overload]
        assert error.value.param == hint and error.value.code == "unknown_parameter"
        assert stub.requests_log()[-1]["status"] == 400


def test_the_diarize_model_takes_no_prompt_and_needs_chunking_over_30_s(client: openai.OpenAI) -> None:
    model = "gpt-4o-transcribe-diarize"
    with pytest.raises(openai.BadRequestError) as prompt:
        client.audio.transcriptions.create(model=model, file=("a.wav", silence_wav(1.0)), prompt="Клиника")
    assert prompt.value.param == "prompt"
    long = silence_wav(31.0)
    with pytest.raises(openai.BadRequestError) as chunking:
        client.audio.transcriptions.create(model=model, file=("a.wav", long), response_format="diarized_json")
    assert chunking.value.param == "chunking_strategy"
    answer = client.audio.transcriptions.create(
        model=model, file=("a.wav", long), response_format="diarized_json", chunking_strategy="auto"
    )
    assert answer.segments and answer.segments[0].speaker


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "wav"])
def test_audio_over_the_duration_limit_is_refused_by_the_gpt_4o_models(
    fmt: RecordingFormat, client: openai.OpenAI, audio_cache: Path
) -> None:
    seconds = GPT4O_MAX_AUDIO_SECONDS + 60
    data = _recording(seconds, fmt, audio_cache)
    assert len(data) < MAX_UPLOAD_BYTES, "under 25 MB: only the duration is over"
    for model in ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"):
        with pytest.raises(openai.BadRequestError) as error:
            client.audio.transcriptions.create(model=model, file=(f"call.{fmt}", data))
        message = _message(error)
        assert "seconds is longer than 1400 seconds which is the maximum for this model" in message
        measured = float(message.split("audio duration ", 1)[1].split(" seconds", 1)[0])
        assert measured == pytest.approx(seconds, abs=0.5), "measured from the uploaded bytes"
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=(f"call.{fmt}", data), response_format="verbose_json"
    )
    assert verbose.duration == pytest.approx(seconds, abs=0.5)
    assert [s.text for s in verbose.segments or []] == [text for _, text in SCRIPT]
    if fmt == "wav":  # just under the limit: accepted (the WAV is cheapest to build)
        shorter = _recording(GPT4O_MAX_AUDIO_SECONDS - 1, fmt, audio_cache)
        assert client.audio.transcriptions.create(model="gpt-4o-transcribe", file=(f"call.{fmt}", shorter)).text


def test_a_file_over_25_mb_is_413_and_unreadable_audio_400(client: openai.OpenAI) -> None:
    big = silence_wav(1.0) + bytes(MAX_UPLOAD_BYTES)
    with pytest.raises(openai.APIStatusError) as too_large:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", big))
    assert too_large.value.status_code == 413
    assert too_large.value.type == "server_error"
    message = _message(too_large)
    assert message.startswith("Maximum content size limit (26214400) exceeded (")
    read = int(message.split("exceeded (", 1)[1].split(" bytes read)", 1)[0])
    assert read > len(big), "the whole request is counted"
    garbage = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40  # an MP3's magic, then no audio
    with pytest.raises(openai.BadRequestError) as corrupted:
        client.audio.transcriptions.create(model="whisper-1", file=("call.mp3", garbage))
    assert _message(corrupted) == "Audio file might be corrupted or unsupported"


def test_latency_grows_with_the_audio_and_concurrency_is_tracked(stub: OpenAIStub, client: openai.OpenAI) -> None:
    stub.configure(latency_ms_per_audio_minute=1200)
    minute = silence_wav(60.0)
    started = time.monotonic()
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", minute))
    assert time.monotonic() - started >= 1.2
    stub.reset_stats()
    request = {"model": "whisper-1", "file": ("a.wav", minute)}
    threads = [threading.Thread(target=client.audio.transcriptions.create, kwargs=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stats = stub.stats()
    assert stats["transcriptions"] == 4 and stats["transcriptions_in_flight"] == 0
    assert stats["max_transcriptions_in_flight"] == 4, "each held 1.2 s: all four at once"


def test_the_reset_fault_drops_the_connection(stub: OpenAIStub, client: openai.OpenAI) -> None:
    stub.configure(fault_rate=1.0, fault_kinds=["reset"])
    with pytest.raises(openai.APIConnectionError):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", silence_wav(1.0)))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=X)  # type: ignore[arg-type]
    assert stub.stats()["faults"] == {"reset": 2}
    assert [entry["status"] for entry in stub.requests_log()] == [None, None], "no answer was sent"
    stub.configure(fault_rate=0.0)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=X).choices  # type: ignore[arg-type]


def test_an_invalid_json_200_is_retried_until_the_transcription_succeeds(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=0.5, fault_kinds=["invalid_json", "reset"])
    wav = silence_wav(1.0)
    with openai.OpenAI(base_url=stub.base_url, api_key=KEY, max_retries=0, timeout=10.0) as client:
        for _ in range(6):
            answer = with_retries(
                lambda: client.audio.transcriptions.create(model="gpt-transcribe", file=("a.wav", wav)),
                policy=RetryPolicy(attempts=12, base_delay=0.01, max_delay=0.02),
                what="transcription",
            )
            assert answer.text
    assert stub.stats()["faults"].get("invalid_json", 0) > 0, "some answers were cut short and retried"


def test_rules_cover_dated_snapshots() -> None:
    assert transcription_rules("gpt-4o-mini-transcribe-2025-12-15") == transcription_rules("gpt-4o-mini-transcribe")
    assert transcription_rules("whisper-1").max_seconds is None
    assert transcription_rules("my-own-whisper").formats[0] == "json"


# ---------------------------------------------------------------------------------- chat completions


def test_reasoning_models_take_only_the_default_sampling(client: openai.OpenAI) -> None:
    for model in ("gpt-5.4-mini", "gpt-5", "o4-mini"):
        with pytest.raises(openai.BadRequestError) as temperature:
            client.chat.completions.create(model=model, messages=X, temperature=0)  # type: ignore[arg-type]
        assert temperature.value.param == "temperature" and temperature.value.code == "unsupported_value"
        assert _message(temperature) == (
            "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is "
            "supported."
        )
        with pytest.raises(openai.BadRequestError) as max_tokens:
            client.chat.completions.create(model=model, messages=X, max_tokens=100)  # type: ignore[arg-type]
        assert max_tokens.value.param == "max_tokens" and "max_completion_tokens" in _message(max_tokens)
        assert client.chat.completions.create(model=model, messages=X, temperature=1, max_completion_tokens=500)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="gpt-4.1-mini", messages=X, temperature=0, max_tokens=100)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="json_schema"):  # older than structured outputs
        client.chat.completions.parse(model="gpt-4-turbo", messages=X, response_format=CallAnalysis)  # type: ignore[arg-type]


def test_our_call_analysis_request_is_accepted_by_a_current_model(stub: OpenAIStub, client: openai.OpenAI) -> None:
    transcript = "\n".join(f"{'Администратор' if s == 'administrator' else 'Пациент'}: {t}" for s, t in SCRIPT)
    messages = [
        {"role": "system", "content": "Оцени звонок."},
        {"role": "user", "content": f"Транскрипт:\n{transcript}"},
    ]
    completion = client.chat.completions.parse(model="gpt-5.4-mini", messages=messages, response_format=CallAnalysis)  # type: ignore[arg-type]
    assert completion.choices[0].message.parsed is not None
    entry = stub.requests_log()[-1]
    assert entry["status"] == 200 and entry["response_format"] == "json_schema" and entry["temperature"] is None
    for answer_type in (CallAnalysis, RecommendationThemes, MergedThemes, ManagerActionsAnswer):
        schema = type_to_response_format_param(answer_type)["json_schema"]["schema"]  # type: ignore[index,typeddict-item]
        assert _strict_schema_problem(schema) is None, answer_type.__name__


def _strict(name: str, schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = _obj(inner=node)
    return node


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    *[
        (keyword, _obj(a={"type": "string", keyword: value}), f"'{keyword}' is not permitted")
        for keyword, value in (("minLength", 1), ("maxLength", 9), ("not", {"type": "number"}))
    ],
    *[
        (keyword, _obj(a={"type": "array", "items": {"type": "string"}, keyword: value}), "is not permitted")
        for keyword, value in (("uniqueItems", True), ("contains", {"type": "string"}), ("unevaluatedItems", False))
    ],
    *[
        (keyword, {**_obj(a={"type": "string"}), keyword: value}, "is not permitted")
        for keyword, value in (("patternProperties", {"^x": {"type": "string"}}), ("minProperties", 1),
                               ("propertyNames", {"pattern": "^a"}), ("unevaluatedProperties", False))
    ],
    ("allOf", _obj(a={"allOf": [{"type": "string"}]}), "'allOf' is not permitted"),
    ("oneOf", _obj(a={"oneOf": [{"type": "string"}, {"type": "integer"}]}), "'oneOf' is not permitted"),
    ("if", _obj(a={"type": "string", "if": {"const": "x"}, "then": {"type": "string"}}), "'if' is not permitted"),
    ("no additionalProperties", {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
     "'additionalProperties' is required to be supplied and to be false"),
    ("nested additionalProperties", _obj(a={"type": "object", "properties": {}, "additionalProperties": True}),
     "In context=('properties', 'a'), 'additionalProperties'"),
    ("not all required", {**_obj(a={"type": "string"}, b={"type": "string"}), "required": ["a"]}, "Missing 'b'"),
    ("extra required", {**_obj(a={"type": "string"}), "required": ["a", "b"]}, "Extra required key 'b'"),
    ("root array", {"type": "array", "items": {"type": "string"}}, "got 'type: \"array\"'"),
    ("root anyOf", {"anyOf": [_obj(a={"type": "string"}), _obj(b={"type": "string"})]}, "got 'type: \"anyOf\"'"),
    ("no type", _obj(a={"description": "anything"}), "must have a 'type' key"),
    ("unknown format", _obj(a={"type": "string", "format": "uri"}), "format 'uri' is not supported"),
    ("11 levels", _nested(11), "levels of nesting"),
    ("1001 enum values", _obj(a={"type": "integer", "enum": list(range(1001))}), "enum values"),
    ("a long large enum", _obj(a={"type": "string", "enum": [f"{n:060d}" for n in range(251)]}), "at most 15000"),
    ("5001 properties", _obj(**{f"p{n}": {"type": "string"} for n in range(5001)}), "object properties"),
]


@pytest.mark.parametrize(("case", "schema", "problem"), REFUSED, ids=[case for case, _, _ in REFUSED])
def test_strict_schemas_the_real_api_refuses_are_refused(
    case: str, schema: dict[str, Any], problem: str, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="gpt-5.4-mini",
            messages=X,  # type: ignore[arg-type]
            response_format=_strict("Answer", schema),
        )
    assert error.value.param == "response_format" and error.value.type == "invalid_request_error"
    assert _message(error).startswith("Invalid schema for response_format 'Answer': ")
    assert problem in _message(error), case


def test_supported_schema_keywords_are_accepted(client: openai.OpenAI) -> None:
    schema = {
        **_obj(
            day={"type": "string", "format": "date", "description": "the visit's day"},
            code={"type": "string", "pattern": "^[A-Z]{3}$"},
            score={"type": "integer", "minimum": 0, "maximum": 100},
            share={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.01},
            tags={"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
            who={"anyOf": [{"$ref": "#/$defs/Person"}, {"type": "null"}]},
            note={"type": ["string", "null"], "title": "Note"},
            nested=_nested(8),
        ),
        "$defs": {"Person": _obj(name={"type": "string"})},
    }
    answer = client.chat.completions.create(
        model="gpt-5.4-mini",
        messages=X,  # type: ignore[arg-type]
        response_format=_strict("Answer", schema),
    )
    value = json.loads(answer.choices[0].message.content or "")
    assert set(value) == set(schema["properties"])
    with pytest.raises(openai.BadRequestError, match="'format' is not permitted"):  # fine-tuned: no constraints
        client.chat.completions.create(
            model="ft:gpt-4o-mini-2024-07-18:clinic::abc123",
            messages=X,  # type: ignore[arg-type]
            response_format=_strict("A", schema),
        )
