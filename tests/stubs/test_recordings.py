"""The demo recordings are real audio files as long as their calls (mostly telephony MP3, some WAV and OGG/Opus)
with the dialogue's timeline in their comment tag, and the stub transcribes a split part to the lines said in it."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from callsight.transcription.ffmpeg import ffmpeg_path
from infra.stubs.audio import SAMPLE_RATE, make_recording, make_wav, probe_file, read_metadata
from infra.stubs.clinic_calls import (
    MP3_BITRATES_KBPS,
    RECORDING_CONTENT_TYPES,
    DemoCall,
    RecordingFormat,
    generate_calls,
)
from infra.stubs.openai import OpenAIStub, part_offset

NOW = datetime(2026, 11, 28, tzinfo=UTC)
MAGIC: dict[RecordingFormat, bytes] = {"mp3": b"ID3\x04", "wav": b"RIFF", "ogg": b"OggS"}


@pytest.fixture(scope="module")
def calls() -> list[DemoCall]:
    return generate_calls(600, now=NOW)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recordings")


@pytest.fixture(scope="module")
def talk(calls: list[DemoCall]) -> DemoCall:
    """A recorded call of two to four minutes with a dialogue of several lines."""
    return next(
        c for c in calls if c.has_recording and c.scenario and 120 <= c.duration <= 240 and len(c.scenario.script) >= 6
    )


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    with OpenAIStub() as stub, openai.OpenAI(base_url=stub.base_url, api_key=stub.api_key, max_retries=0) as value:
        yield value


def _ffmpeg(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([ffmpeg_path(), "-hide_banner", "-nostdin", *map(str, args)], capture_output=True,
                          timeout=120, check=False)


def _pcm(path: Path) -> bytes:
    """The file decoded by the packaged ffmpeg to 8 kHz 16-bit mono PCM."""
    done = _ffmpeg("-v", "error", "-i", path, "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _loudness(pcm: bytes, start: float, end: float) -> float:
    samples = memoryview(pcm[int(start * SAMPLE_RATE) * 2 : int(end * SAMPLE_RATE) * 2]).cast("h")
    return statistics.fmean(abs(value) for value in samples) if len(samples) else 0.0


def _as(call: DemoCall, fmt: RecordingFormat) -> DemoCall:
    return dataclasses.replace(call, recording_as=fmt)


def test_formats_are_mostly_telephony_mp3(calls: list[DemoCall]) -> None:
    recorded = [c for c in calls if c.has_recording]
    shares = Counter(c.recording_format for c in recorded)
    assert shares["mp3"] > 0.6 * len(recorded), "the telephony's MP3 mostly"
    assert shares["wav"] > 0.05 * len(recorded) and shares["ogg"] > 0.05 * len(recorded), "some WAV and OGG"
    assert {c.recording_bitrate_kbps for c in recorded} == set(MP3_BITRATES_KBPS)
    assert all(c.recording_path == f"/recordings/{c.uniq}.{c.recording_format}" for c in recorded)
    very_long = [c for c in recorded if c.duration > 1400]
    assert very_long and max(c.duration for c in very_long) <= 3600, "a few calls up to an hour"
    assert calls == generate_calls(600, now=NOW), "deterministic"


@pytest.mark.parametrize("fmt", ["mp3", "wav", "ogg"])
def test_a_recording_is_real_audio_as_long_as_the_call(
    fmt: RecordingFormat, talk: DemoCall, cache: Path, tmp_path: Path
) -> None:
    call = _as(talk, fmt)
    recording = make_recording(call, cache=cache)
    assert recording.extension == fmt and recording.content_type == RECORDING_CONTENT_TYPES[fmt]
    assert recording.data[:4] == MAGIC[fmt]
    if fmt == "ogg":
        assert b"OpusHead" in recording.data[:200]
    path = tmp_path / f"call.{fmt}"
    path.write_bytes(recording.data)
    probe = probe_file(path)
    assert probe.seconds == pytest.approx(call.duration, abs=0.25), "the packaged ffmpeg measures the call's length"
    log = _ffmpeg("-i", path).stderr.decode()
    assert "8000 Hz, mono" in log or (fmt == "ogg" and "opus" in log and "mono" in log)
    if fmt == "mp3":
        assert f"{call.recording_bitrate_kbps} kb/s" in log
    # the tags: the call and each line's time in the recording
    metadata = read_metadata(recording.data, fmt)
    assert metadata is not None and metadata["uniq"] == call.uniq and metadata["duration"] == call.duration
    assert call.scenario is not None
    lines = metadata["lines"]
    assert [(speaker, text) for _, _, speaker, text in lines] == call.scenario.script
    assert lines[0][0] == 0 and lines[-1][1] <= call.duration
    assert all(start < end <= after for (start, end, *_), (after, *_) in itertools.pairwise(lines))
    # speech where the timeline says, silence between
    pcm = _pcm(path)
    spoken = [(start + 0.05, end - 0.05) for start, end, *_ in lines if end - start > 0.2]
    speaking = statistics.fmean(_loudness(pcm, a, b) for a, b in spoken)
    pauses = [(end + 0.1, after - 0.1) for (_, end, *_), (after, *_) in itertools.pairwise(lines)]
    quiet = statistics.fmean(_loudness(pcm, a, b) for a, b in pauses if b - a > 0.1)
    assert speaking > 10 * max(quiet, 1.0)
    assert make_recording(call, cache=cache).data == recording.data
    assert make_recording(call, cache=tmp_path / "fresh").data == recording.data, "deterministic, not just cached"


def test_old_small_wavs_still_give_the_whole_script(talk: DemoCall, client: openai.OpenAI, tmp_path: Path) -> None:
    data = make_wav(talk)
    metadata = read_metadata(data)
    assert metadata is not None and "lines" not in metadata and metadata["audio_seconds"] == 6.0
    assert talk.scenario is not None
    script = [text for _, text in talk.scenario.script]
    assert client.audio.transcriptions.create(model="gpt-transcribe", file=("a.wav", data)).text == (
        talk.scenario.transcript()
    )
    whole = tmp_path / "small.wav"
    whole.write_bytes(data)
    said: list[str] = []
    for number, start in enumerate((0.0, 1.5, 3.0, 4.5), start=1):  # its parts share the script out
        part = _split(whole, start, 1.5, tmp_path / f"small-part{number:02d}-at{round(start * 1000)}ms.wav")
        answer = client.audio.transcriptions.create(model="gpt-transcribe", file=(part.name, part.read_bytes()))
        said.extend(line for line in answer.text.split("\n") if line)
    assert said == script


def test_part_names_carry_their_offset() -> None:
    assert part_offset("call-77-part02-at1372400ms.mp3") == 1372.4
    assert part_offset("call-77-part01-at0ms.wav") == 0.0
    assert part_offset("call-77.mp3") is None
    assert part_offset("at5ms.mp3") is None


def _split(path: Path, start: float, seconds: float, out: Path) -> Path:
    """A part cut by the packaged ffmpeg the way a splitter does: stream copy, tags kept (default mapping)."""
    done = _ffmpeg("-v", "error", "-y", "-ss", f"{start}", "-t", f"{seconds}", "-i", path, "-c", "copy", out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("fmt", ["mp3", "wav", "ogg"])
def test_a_part_is_transcribed_to_the_lines_of_its_window(
    fmt: RecordingFormat, talk: DemoCall, cache: Path, tmp_path: Path, client: openai.OpenAI
) -> None:
    call = _as(talk, fmt)
    recording = make_recording(call, cache=cache)
    whole = tmp_path / f"{call.uniq}.{fmt}"
    whole.write_bytes(recording.data)
    metadata = read_metadata(recording.data, fmt)
    assert metadata is not None
    lines: list[list[Any]] = metadata["lines"]

    unsplit = client.audio.transcriptions.create(model="whisper-1", file=(whole.name, recording.data),
                                                 response_format="verbose_json")
    assert [s.text for s in unsplit.segments or []] == [text for *_, text in lines]
    assert [s.start for s in unsplit.segments or []] == [round(start, 2) for start, *_ in lines]

    said: list[str] = []
    offset = 0.0
    number = 1
    while offset < call.duration:  # one-minute parts, as a splitter would send them
        part = _split(whole, offset, 60.0, tmp_path / f"{call.uniq}-part{number:02d}-at{round(offset * 1000)}ms.{fmt}")
        data = part.read_bytes()
        answer = client.audio.transcriptions.create(model="whisper-1", file=(part.name, data),
                                                    response_format="verbose_json")
        seconds = float(answer.duration)
        window = [line for line in lines if offset <= line[0] < offset + seconds]
        segments = answer.segments or []
        assert [s.text for s in segments] == [text for *_, text in window]
        for segment, (start, *_) in zip(segments, window, strict=True):
            assert segment.start == pytest.approx(start - offset, abs=0.011), "times relative to the part"
            assert segment.end <= seconds + 0.01
        json_answer = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=(part.name, data))
        assert json_answer.text == "\n".join(text for *_, text in window)
        said.extend(s.text for s in segments)
        offset += seconds
        number += 1
    assert number > 2, "split into several parts"
    assert said == [text for *_, text in lines], "every line once, in order, over the parts"
