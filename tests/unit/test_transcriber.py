"""The Transcriber end to end: a recording in S3 (moto) streamed to disk, split with the packaged ffmpeg, its parts
sent at once to the stub OpenAI (a real HTTP server) with the production client, with each model's parameters."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.errors import CallFailed
from callsight.llm import RetryPolicy
from callsight.logic.transcribe import WORKDIR_PREFIX, Transcriber, TranscriptionSettings, remove_leftover_workdirs
from callsight.transcription.ffmpeg import ffmpeg_path
from callsight.transcription.models import GPT4O_MAX_SECONDS, request_parameters, transcription_model
from infra.stubs.openai import OpenAIStub, multipart_boundary, parse_multipart
from infra.stubs.server import Response
from tests.unit.test_audio_parts import PART_NAME, big_recordings, pcm_wav, probe

FAST_RETRIES = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
SETTINGS = TranscriptionSettings(model="gpt-transcribe", language="ru", prompt="", response_format="",
                                 max_upload_bytes=25 * 1024 * 1024, max_audio_seconds=None,
                                 keywords=("имплант", "винир"), part_concurrency=4, retry=FAST_RETRIES)


def _fields(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, list[str]], str | None]:
    """The multipart form's text fields and the uploaded file's name (the stub's own parser)."""
    boundary = multipart_boundary(headers.get("content-type", ""))
    if boundary is None:
        return {}, None
    fields, files = parse_multipart(body, boundary)
    return fields, files["file"][0] if "file" in files else None


class RecordingStub(OpenAIStub):
    """The stub OpenAI, also recording each transcription request (its fields, its file's name), how many were in
    flight at once, and answering scripted faults first."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, list[str]], str | None]] = []
        self.invalid_json_first = 0  #: answer this many transcriptions with a truncated JSON 200
        self.fail_files = ""  #: answer 400 to files whose name contains this
        self.in_flight = self.max_in_flight = 0
        self.release = threading.Event()  #: set: requests are answered; clear: held until all expected arrived
        self.hold_until = 0
        self._count_lock = threading.Lock()

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, size: int) -> Response:
        if not target.startswith("/v1/audio/transcriptions") or body is None:
            return super().handle(method, target, headers, body, size)
        fields, filename = _fields(headers, body)
        with self._count_lock:
            self.received.append((fields, filename))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.in_flight >= self.hold_until:
                self.release.set()
            truncated = self.invalid_json_first > 0
            self.invalid_json_first -= 1 if truncated else 0
        try:
            self.release.wait(10)  # held until `hold_until` requests are in flight at once (or 10 s: then they are not)
            if truncated:
                return Response(200, b'{"text": "\xd0\xb7\xd0\xb4\xd1', "application/json")
            if self.fail_files and filename and self.fail_files in filename:
                return Response(400, b'{"error": {"message": "Audio file might be corrupted or unsupported", '
                                     b'"type": "invalid_request_error", "param": "file", "code": "invalid_value"}}',
                                "application/json")
            return super().handle(method, target, headers, body, size)
        finally:
            with self._count_lock:
                self.in_flight -= 1


@pytest.fixture(autouse=True)
def no_ffmpeg_on_path(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
    assert shutil.which("ffmpeg") is None
    assert Path(ffmpeg_path()).is_file()


@pytest.fixture(scope="module")
def stub() -> Iterator[RecordingStub]:
    with RecordingStub() as server:
        yield server


@pytest.fixture
def openai_stub(stub: RecordingStub) -> RecordingStub:
    stub.configure(fault_rate=0, latency_ms=0)
    stub.received.clear()
    stub.invalid_json_first = 0
    stub.fail_files = ""
    stub.max_in_flight = 0
    stub.hold_until = 0
    stub.release.set()
    return stub


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return big_recordings(tmp_path_factory.getbasetemp() / "big-recordings")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "transcriber-tmp"
    folder.mkdir()
    return folder


def _client(stub: OpenAIStub) -> OpenAI:
    return OpenAI(api_key="stub-openai-key", base_url=f"{stub.url}/v1", max_retries=0, timeout=30)


def _store_call(table: Table, bucket: str, recording: Path,
                call_id: str = "leads-77") -> tuple[CallKey, dict[str, Any]]:
    key = CallKey("2026-11-10", call_id)
    stored = f"recordings/c/{key.day}/{call_id}{recording.suffix}"
    with recording.open("rb") as handle:
        ObjectStore(bucket).upload(stored, handle, "application/octet-stream")
    CallRepository(table, "c").insert_many("transcribe", [{
        "call_id": call_id, "day": key.day, "recording_key": stored, "duration": 60, "direction": "incoming",
        "transcribe_status": "processing"}])
    item = CallRepository(table, "c").get(key)
    assert item is not None
    return key, item


def _transcriber(table: Table, bucket: str, stub: OpenAIStub, workdir: Path, clinic: dict[str, Any] | None = None,
                 **overrides: Any) -> Transcriber:
    settings = TranscriptionSettings(**{**SETTINGS.__dict__, "workdir": str(workdir), **overrides})
    return Transcriber(calls=CallRepository(table, "c"), store=ObjectStore(bucket), client=_client(stub),
                       settings=settings, clinic_settings=clinic)


# ------------------------------------------------------------------ long recordings, parts at once


@pytest.mark.parametrize("kind", ["mp3", "ogg", "wav"])
def test_a_long_large_recording_is_split_and_its_parts_transcribed_at_once(
        kind: str, big: dict[str, Path], table: Table, bucket: str, openai_stub: RecordingStub, workdir: Path) -> None:
    key, call = _store_call(table, bucket, big[kind])
    total = probe(big[kind])[0]
    openai_stub.hold_until = 2  # no request is answered before two are in flight at once
    openai_stub.release.clear()
    result = _transcriber(table, bucket, openai_stub, workdir).transcribe(key, call)
    transcript = ObjectStore(bucket).get_json(result["transcript_key"])
    parts = transcript["part_list"]
    assert transcript["parts"] == len(parts) >= 2 and transcript["model"] == "gpt-transcribe"
    assert sorted(name for _, name in openai_stub.received) == [p["filename"] for p in parts]
    assert all(PART_NAME.match(p["filename"]) for p in parts)
    assert [round(p["offset"] * 1000) for p in parts] == [
        int(PART_NAME.match(p["filename"])["ms"]) for p in parts]  # type: ignore[index]
    assert parts[-1]["offset"] + parts[-1]["duration"] == pytest.approx(total, abs=0.2)
    assert transcript["duration"] == pytest.approx(total, abs=0.2)
    assert 2 <= openai_stub.max_in_flight <= SETTINGS.part_concurrency  # sent at once, not one after another
    assert transcript["text"] and transcript["lines"]
    assert list(workdir.iterdir()) == []  # the recording and its parts are gone


def test_at_most_part_concurrency_parts_are_in_flight(table: Table, bucket: str, openai_stub: RecordingStub,
                                                      tmp_path: Path, workdir: Path) -> None:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 12.0))
    openai_stub.configure(latency_ms=50)
    openai_stub.hold_until = 2
    openai_stub.release.clear()
    result = _transcriber(table, bucket, openai_stub, workdir, part_concurrency=2,
                          max_audio_seconds=2.0).transcribe(key, call)
    assert ObjectStore(bucket).get_json(result["transcript_key"])["parts"] == 6
    assert openai_stub.max_in_flight == 2


# --------------------------------------------------------------------------------------- retries


def test_an_invalid_json_200_is_retried_and_the_call_succeeds(table: Table, bucket: str, openai_stub: RecordingStub,
                                                             tmp_path: Path, workdir: Path) -> None:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 3.0))
    openai_stub.invalid_json_first = 2
    result = _transcriber(table, bucket, openai_stub, workdir).transcribe(key, call)
    assert ObjectStore(bucket).get_json(result["transcript_key"])["text"]
    assert len(openai_stub.received) == 3  # two truncated answers, then the one that was read


def test_invalid_json_every_time_fails_the_call_after_the_attempts(table: Table, bucket: str,
                                                                  openai_stub: RecordingStub, tmp_path: Path,
                                                                  workdir: Path) -> None:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 3.0))
    openai_stub.invalid_json_first = 100
    with pytest.raises(CallFailed, match=r"leads-77\.wav failed: the answer was not valid JSON 3 times"):
        _transcriber(table, bucket, openai_stub, workdir).transcribe(key, call)
    assert len(openai_stub.received) == FAST_RETRIES.attempts
    assert list(workdir.iterdir()) == []


def test_one_part_failing_fails_the_call_with_that_parts_reason(table: Table, bucket: str,
                                                               openai_stub: RecordingStub, tmp_path: Path,
                                                               workdir: Path) -> None:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 6.0))
    openai_stub.fail_files = "-part02-"
    with pytest.raises(CallFailed, match=r"transcription of leads-77-part02-at2000ms\.wav failed: HTTP 400 Audio file"):
        _transcriber(table, bucket, openai_stub, workdir, max_audio_seconds=2.0).transcribe(key, call)
    assert list(workdir.iterdir()) == []


def test_audio_ffmpeg_cannot_read_fails_the_call_saying_so(table: Table, bucket: str, openai_stub: RecordingStub,
                                                          tmp_path: Path, workdir: Path) -> None:
    junk = tmp_path / "call.mp3"
    junk.write_bytes(b"<html>not audio</html>" * 50)
    key, call = _store_call(table, bucket, junk)
    with pytest.raises(CallFailed, match="transcription impossible: ffmpeg finds no audio in the recording"):
        _transcriber(table, bucket, openai_stub, workdir).transcribe(key, call)
    assert openai_stub.received == [] and list(workdir.iterdir()) == []


# ------------------------------------------------------------------------------ what each model gets


def _sent(table: Table, bucket: str, stub: RecordingStub, tmp_path: Path, workdir: Path,
          clinic: dict[str, Any] | None = None, **overrides: Any) -> dict[str, list[str]]:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 3.0))
    _transcriber(table, bucket, stub, workdir, clinic, **overrides).transcribe(key, call)
    [(fields, filename)] = stub.received
    assert filename == "leads-77.wav"
    return fields


def test_gpt_transcribe_gets_keywords_and_languages_not_language_or_prompt(
        table: Table, bucket: str, openai_stub: RecordingStub, tmp_path: Path, workdir: Path) -> None:
    fields = _sent(table, bucket, openai_stub, tmp_path, workdir, response_format="verbose_json")
    assert fields["model"] == ["gpt-transcribe"] and fields["response_format"] == ["json"]
    assert fields["keywords[]"] == ["имплант", "винир"] and fields["languages[]"] == ["ru"]
    assert "language" not in fields and "prompt" not in fields


def test_whisper_gets_language_a_prompt_of_the_vocabulary_and_timed_segments(
        table: Table, bucket: str, openai_stub: RecordingStub, tmp_path: Path, workdir: Path) -> None:
    fields = _sent(table, bucket, openai_stub, tmp_path, workdir, model="whisper-1")
    assert fields["model"] == ["whisper-1"] and fields["response_format"] == ["verbose_json"]
    assert fields["language"] == ["ru"] and fields["prompt"] == ["имплант, винир"]
    assert "keywords[]" not in fields and "languages[]" not in fields


def test_gpt_4o_transcribe_gets_json_whatever_is_configured(table: Table, bucket: str, openai_stub: RecordingStub,
                                                           tmp_path: Path, workdir: Path) -> None:
    fields = _sent(table, bucket, openai_stub, tmp_path, workdir, model="gpt-4o-transcribe",
                   response_format="verbose_json", prompt="Стоматология")
    assert fields["response_format"] == ["json"]
    assert fields["language"] == ["ru"] and fields["prompt"] == ["Стоматология"]


def test_a_clinics_model_and_vocabulary_override_the_functions(table: Table, bucket: str, openai_stub: RecordingStub,
                                                              tmp_path: Path, workdir: Path) -> None:
    fields = _sent(table, bucket, openai_stub, tmp_path, workdir,
                   clinic={"model": "whisper-1", "keywords": "брекеты, элайнеры", "language": "kk"})
    assert fields["model"] == ["whisper-1"]
    assert fields["prompt"] == ["брекеты, элайнеры"] and fields["language"] == ["kk"]


def test_the_stored_transcript_names_the_clinics_model_and_language(table: Table, bucket: str,
                                                                    openai_stub: RecordingStub, tmp_path: Path,
                                                                    workdir: Path) -> None:
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 3.0))
    result = _transcriber(table, bucket, openai_stub, workdir, {"model": "whisper-1", "language": "kk"}).transcribe(
        key, call)
    transcript = ObjectStore(bucket).get_json(result["transcript_key"])
    assert (transcript["model"], transcript["language"]) == ("whisper-1", "kk")


def test_the_diarize_model_gets_no_prompt_and_a_chunking_strategy() -> None:
    model = transcription_model("gpt-4o-transcribe-diarize", default_max_seconds=600)
    parameters = request_parameters(model, model_name=model.name, language="ru", prompt="клиника",
                                    keywords=["имплант"], response_format="json")
    assert parameters == {"model": "gpt-4o-transcribe-diarize", "response_format": "json", "language": "ru",
                          "chunking_strategy": "auto"}
    assert model.response_format("verbose_json") == "diarized_json"


def test_model_limits_and_unknown_models() -> None:
    assert transcription_model("gpt-4o-mini-transcribe-2025-12-15", default_max_seconds=60).max_seconds == (
        GPT4O_MAX_SECONDS)
    assert transcription_model("whisper-1", default_max_seconds=60).max_seconds is None
    local = transcription_model("Systran/faster-whisper-large-v3", default_max_seconds=900)
    assert (local.response_formats, local.max_seconds, local.prompt, local.keywords) == (("json",), 900, True, False)


def test_what_a_stopped_worker_left_in_tmp_is_removed_at_start_up(tmp_path: Path) -> None:
    # a sandbox runs one invocation at a time: at start-up every call directory in its /tmp is a dead worker's
    stale = tmp_path / f"{WORKDIR_PREFIX}abc123"
    stale.mkdir()
    (stale / "recording.mp3").write_bytes(b"ID3" + bytes(1000))
    just_killed = tmp_path / f"{WORKDIR_PREFIX}def456"  # a worker killed at its timeout a moment ago
    just_killed.mkdir()
    other = tmp_path / "someone-elses"
    other.mkdir()
    assert remove_leftover_workdirs(str(tmp_path)) == 2
    assert not stale.exists() and not just_killed.exists() and other.is_dir()


def test_the_diarize_model_transcribes_a_long_call_against_the_stub(table: Table, bucket: str,
                                                                     openai_stub: RecordingStub, tmp_path: Path,
                                                                     workdir: Path) -> None:
    # over 30 s the real API refuses the diarize model without a chunking strategy, and any prompt: the stub too
    key, call = _store_call(table, bucket, pcm_wav(tmp_path / "call.wav", 40.0))
    result = _transcriber(table, bucket, openai_stub, workdir, model="gpt-4o-transcribe-diarize").transcribe(key, call)
    [(fields, _)] = openai_stub.received
    assert fields["chunking_strategy"] == ["auto"] and "prompt" not in fields
    assert fields["response_format"] == ["diarized_json"]
    assert ObjectStore(bucket).get_json(result["transcript_key"])["model"] == "gpt-4o-transcribe-diarize"
