"""Transcription and analysis logic against the stub OpenAI (real HTTP, the official client) and moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from callsight.analysis.models import CallAnalysis
from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.errors import CallFailed
from callsight.llm import RetryPolicy
from callsight.logic.analyze import AnalysisSettings, Analyzer
from callsight.logic.transcribe import Transcriber, TranscriptionSettings
from infra.stubs.audio import make_wav
from infra.stubs.clinic_calls import DemoCall, generate_calls
from infra.stubs.openai import OpenAIStub

SETTINGS = TranscriptionSettings(model="gpt-transcribe", language="ru", prompt="клиника", response_format="json",
                                 max_upload_bytes=25 * 1024 * 1024, max_audio_seconds=1400)


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: OpenAIStub) -> None:
    stub.configure(fault_rate=0, fault_kinds=["429", "500", "timeout", "invalid_json"])


def _client(stub: OpenAIStub) -> OpenAI:
    return OpenAI(api_key="stub-openai-key", base_url=f"{stub.url}/v1", max_retries=0, timeout=10)


def _store_call(table: Table, bucket: str, call: DemoCall) -> CallKey:
    key = CallKey("2026-11-10", f"leads-{call.note_id}")
    recording = f"recordings/c/{key.day}/{key.call_id}.wav"
    ObjectStore(bucket).put_bytes(recording, make_wav(call), "audio/wav")
    CallRepository(table, "c").insert_many("transcribe", [{
        "call_id": key.call_id, "day": key.day, "recording_key": recording, "duration": call.duration,
        "direction": "incoming" if call.note_type == "call_in" else "outgoing", "transcribe_status": "processing"}])
    return key


def _item(table: Table, key: CallKey) -> dict[str, Any]:
    item = CallRepository(table, "c").get(key)
    assert item is not None
    return item


def _answered(count: int) -> list[DemoCall]:
    return [c for c in generate_calls(200) if c.has_recording and c.scenario][:count]


def test_a_long_recording_is_split_and_the_parts_joined(table: Table, bucket: str, stub: OpenAIStub) -> None:
    call = max(_answered(40), key=lambda c: c.duration)
    key = _store_call(table, bucket, call)
    small = TranscriptionSettings(**{**SETTINGS.__dict__, "max_audio_seconds": 1.5})
    before = stub.stats()["transcriptions"]
    result = Transcriber(calls=CallRepository(table, "c"), store=ObjectStore(bucket), client=_client(stub),
                         settings=small).transcribe(key, _item(table, key))
    transcript = ObjectStore(bucket).get_json(result["transcript_key"])
    assert transcript["parts"] >= 3 and stub.stats()["transcriptions"] - before == transcript["parts"]
    assert transcript["text"] and transcript["lines"]
    assert len(transcript["lines"]) >= transcript["parts"]  # no part's words dropped by the join


def test_timed_segments_give_each_line_its_times_in_the_whole_recording(table: Table, bucket: str,
                                                                        stub: OpenAIStub) -> None:
    call = max(_answered(40), key=lambda c: c.duration)
    key = _store_call(table, bucket, call)
    timed = TranscriptionSettings(**{**SETTINGS.__dict__, "response_format": "verbose_json", "model": "whisper-1",
                                     "max_audio_seconds": 1.5})
    result = Transcriber(calls=CallRepository(table, "c"), store=ObjectStore(bucket), client=_client(stub),
                         settings=timed).transcribe(key, _item(table, key))
    transcript = ObjectStore(bucket).get_json(result["transcript_key"])
    lines, segments = transcript["lines"], transcript["segments"]
    assert transcript["parts"] >= 2 and len(lines) == len([s for s in segments if s["text"].strip()])
    assert [(line["start"], line["end"]) for line in lines] == [(s["start"], s["end"]) for s in segments
                                                                if s["text"].strip()]
    starts = [line["start"] for line in lines]
    assert starts == sorted(starts) and starts[-1] > 1.5  # the later parts' times are shifted, not restarted


def test_transcript_lines_are_labelled_by_speaker(table: Table, bucket: str, stub: OpenAIStub) -> None:
    calls = _answered(12)
    right = total = 0
    for call in calls:
        key = _store_call(table, bucket, call)
        result = Transcriber(calls=CallRepository(table, "c"), store=ObjectStore(bucket), client=_client(stub),
                             settings=SETTINGS).transcribe(key, _item(table, key))
        lines = ObjectStore(bucket).get_json(result["transcript_key"])["lines"]
        assert call.scenario is not None
        truth = {text.strip(): speaker for speaker, text in call.scenario.script}
        for line in lines:
            speaker = next((s for t, s in truth.items() if line["text"] in t), None)
            if speaker:
                total += 1
                right += speaker == line["speaker"]
    assert total and right / total >= 0.8


def _analyzer(table: Table, bucket: str, stub: OpenAIStub, clinic: dict[str, Any] | None = None) -> Analyzer:
    return Analyzer(store=ObjectStore(bucket), client=_client(stub),
                    settings=AnalysisSettings(model="gpt-4.1-mini", attempts=3), clinic_settings=clinic or {})


def _transcribed(table: Table, bucket: str, stub: OpenAIStub, call: DemoCall) -> CallKey:
    key = _store_call(table, bucket, call)
    result = Transcriber(calls=CallRepository(table, "c"), store=ObjectStore(bucket), client=_client(stub),
                         settings=SETTINGS).transcribe(key, _item(table, key))
    CallRepository(table, "c").update_fields(key, result)
    return key


def test_analysis_is_validated_and_follows_the_call(table: Table, bucket: str, stub: OpenAIStub) -> None:
    call = next(c for c in _answered(60) if c.scenario and c.scenario.call_type == "booking" and c.scenario.booked)
    key = _transcribed(table, bucket, stub, call)
    stored = _analyzer(table, bucket, stub).analyze(key, _item(table, key))
    analysis = CallAnalysis.model_validate(stored["analysis"])
    assert analysis.outcome.booked and stored["booked"] is True and stored["call_type"] == "booking"
    assert 0 <= stored["overall_score"] <= 100


def test_an_answer_failing_validation_is_asked_again_then_the_call_fails_with_why(
        table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    stub.configure(fault_rate=1.0, fault_kinds=["invalid_json"])
    before = stub.stats()["completions"]
    with pytest.raises(CallFailed) as failure:
        _analyzer(table, bucket, stub).analyze(key, _item(table, key))
    assert "failed validation after 3 attempts" in str(failure.value)
    assert stub.stats()["completions"] - before == 3


def test_a_clinics_own_prompt_and_model_are_used(table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    sent: list[dict[str, Any]] = []
    client = OpenAI(api_key="stub-openai-key", base_url=f"{stub.url}/v1", max_retries=0, timeout=10,
                    http_client=httpx.Client(event_hooks={"request": [lambda r: sent.append(json.loads(r.read()))]}))
    analyzer = Analyzer(store=ObjectStore(bucket), client=client, settings=AnalysisSettings(model="gpt-4.1-mini",
                        attempts=3), clinic_settings={"model": "gpt-4o-mini", "rubric": "Оцени только вежливость."})
    stored = analyzer.analyze(key, _item(table, key))
    assert stored["analysis_model"] == "gpt-4o-mini" and stub.stats()["models"].get("gpt-4o-mini")
    prompts = " ".join(str(m["content"]) for m in sent[-1]["messages"])
    assert "Оцени только вежливость." in prompts  # the clinic's rubric reached the model


def _recording_client(stub: OpenAIStub, sent: list[dict[str, Any]], faults: list[str] | None = None,
                      timeout: float = 10) -> OpenAI:
    """The official client (no retries of its own) recording each request's body; its n-th request meets the
    stub's n-th fault of ``faults`` ("" or past the end: none)."""
    plan = iter(faults or [])

    def before(request: httpx.Request) -> None:
        fault = next(plan, "")
        stub.configure(fault_rate=1.0 if fault else 0.0, fault_kinds=[fault or "500"])
        sent.append(json.loads(request.read()))

    return OpenAI(api_key="stub-openai-key", base_url=f"{stub.url}/v1", max_retries=0, timeout=timeout,
                  http_client=httpx.Client(event_hooks={"request": [before]}))


FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.02)


@pytest.mark.parametrize(("model", "clinic_model", "expected"), [
    ("gpt-5.4-mini", None, {"reasoning_effort": "low"}),
    ("gpt-4.1-mini", None, {"temperature": 0}),
    ("gpt-4.1-mini", "gpt-5.4", {"reasoning_effort": "low"}),  # the clinic's model, with its family's parameters
    ("gpt-5.4-mini", "gpt-4o-mini", {"temperature": 0}),
])
def test_each_model_gets_the_parameters_its_family_takes(table: Table, bucket: str, stub: OpenAIStub, model: str,
                                                         clinic_model: str | None, expected: dict[str, Any]) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    sent: list[dict[str, Any]] = []
    analyzer = Analyzer(store=ObjectStore(bucket), client=_recording_client(stub, sent),
                        settings=AnalysisSettings(model=model, attempts=3),
                        clinic_settings={"model": clinic_model} if clinic_model else {})
    stored = analyzer.analyze(key, _item(table, key))
    used = clinic_model or model
    assert stored["analysis_model"] == used and [body["model"] for body in sent] == [used]
    assert {k: sent[0][k] for k in ("temperature", "reasoning_effort", "max_tokens") if k in sent[0]} == expected


def test_invalid_json_and_lost_connections_are_retried_and_the_call_succeeds(
        table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    stub.configure(timeout_seconds=2.0)  # a "timeout" request is held longer than the client waits
    try:
        sent: list[dict[str, Any]] = []
        client = _recording_client(stub, sent, ["invalid_json", "timeout", "invalid_json"], timeout=0.3)
        analyzer = Analyzer(store=ObjectStore(bucket), client=client, clinic_settings={},
                            settings=AnalysisSettings(model="gpt-5.4-mini", attempts=4, retry=FAST_RETRY))
        before = stub.stats()["faults"]
        stored = analyzer.analyze(key, _item(table, key))
        faults = stub.stats()["faults"]
    finally:
        stub.configure(timeout_seconds=5.0)
    assert CallAnalysis.model_validate(stored["analysis"]) and len(sent) == 4
    assert faults.get("invalid_json", 0) - before.get("invalid_json", 0) == 2
    assert faults.get("timeout", 0) - before.get("timeout", 0) == 1


def test_a_connection_reset_without_an_answer_is_retried_and_the_call_succeeds(
        table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    sent: list[dict[str, Any]] = []
    client = _recording_client(stub, sent, ["reset", "reset"])  # the stub closes the connection, answering nothing
    analyzer = Analyzer(store=ObjectStore(bucket), client=client, clinic_settings={},
                        settings=AnalysisSettings(model="gpt-5.4-mini", attempts=3, retry=FAST_RETRY))
    before = stub.stats()["faults"].get("reset", 0)
    stored = analyzer.analyze(key, _item(table, key))
    assert CallAnalysis.model_validate(stored["analysis"]) and len(sent) == 3
    assert stub.stats()["faults"].get("reset", 0) - before == 2


def test_lost_connections_past_the_budget_fail_the_call_naming_the_error(
        table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    stub.configure(timeout_seconds=2.0)
    try:
        sent: list[dict[str, Any]] = []
        analyzer = Analyzer(store=ObjectStore(bucket), client=_recording_client(stub, sent, ["timeout"] * 3,
                                                                                  timeout=0.3),
                            settings=AnalysisSettings(model="gpt-5.4-mini", attempts=3, retry=FAST_RETRY),
                            clinic_settings={})
        with pytest.raises(CallFailed, match=r"after 3 request\(s\): APITimeoutError") as failure:
            analyzer.analyze(key, _item(table, key))
    finally:
        stub.configure(timeout_seconds=5.0)
    assert len(sent) == 3 and "stub-openai-key" not in str(failure.value)


def test_a_permanent_refusal_is_not_retried(table: Table, bucket: str, stub: OpenAIStub) -> None:
    key = _transcribed(table, bucket, stub, _answered(1)[0])
    sent: list[dict[str, Any]] = []
    analyzer = Analyzer(store=ObjectStore(bucket), client=_recording_client(stub, sent),
                        settings=AnalysisSettings(model="gpt-5.4-mini", attempts=4, retry=FAST_RETRY),
                        clinic_settings={"model": "gpt-unknown-model"})
    with pytest.raises(CallFailed, match="HTTP 404") as failure:
        analyzer.analyze(key, _item(table, key))
    assert "gpt-unknown-model" in str(failure.value) and len(sent) == 1
