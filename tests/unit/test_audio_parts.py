"""Making recordings uploadable: WAV split in pure Python, other formats via ffmpeg, transcripts joined."""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import struct
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callsight.transcription.audio import (
    AudioPart,
    AudioTooLarge,
    join_transcripts,
    prepare_parts,
    wav_duration,
)
from infra.stubs.audio import make_wav, read_wav_metadata
from infra.stubs.clinic_calls import DemoCall, generate_calls

NOW = datetime(2026, 11, 28, tzinfo=UTC)
MB = 1024 * 1024


def pcm_wav(seconds: float, *, rate: int = 8000, channels: int = 1, width: int = 2, seed: int = 1) -> bytes:
    frames = int(seconds * rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(random.Random(seed).randbytes(frames * channels * width))
    return buffer.getvalue()


def read(data: bytes) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(io.BytesIO(data), "rb") as reader:
        params = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        return params, reader.readframes(reader.getnframes())


def check_split(original: bytes, parts: list[AudioPart]) -> None:
    """Valid WAV parts, same parameters, frames concatenating to the original's, exact offsets."""
    params, frames = read(original)
    channels, width, rate = params
    joined = b""
    position = 0
    for part in parts:
        part_params, part_frames = read(part.data)
        assert part_params == params
        assert part.filename.endswith(".wav")
        assert part.offset_seconds == position / rate
        count = len(part_frames) // (channels * width)
        assert part.duration_seconds == count / rate
        joined += part_frames
        position += count
    assert joined == frames


@pytest.fixture(scope="module")
def demo_call() -> DemoCall:
    return next(call for call in generate_calls(60, now=NOW) if call.scenario is not None and call.duration >= 6)


# ------------------------------------------------------------------------------------------ WAV


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(8000, 1, 2), (44100, 2, 2), (11025, 1, 1), (16000, 2, 1), (22050, 1, 3)]
)
def test_wav_split_by_length(rate: int, channels: int, width: int) -> None:
    data = pcm_wav(10.0, rate=rate, channels=channels, width=width)
    parts = prepare_parts(data, filename="call.wav", max_seconds=3.0)
    assert len(parts) == 4  # the fewest parts of at most 3 s, equal-ish: 2.5 s each
    assert [part.offset_seconds for part in parts] == pytest.approx([0.0, 2.5, 5.0, 7.5], abs=2 / rate)
    assert [part.filename for part in parts] == [f"call-part0{i}.wav" for i in range(1, 5)]
    assert all(part.duration_seconds is not None and part.duration_seconds <= 3.0 for part in parts)
    check_split(data, parts)


def test_wav_split_by_size() -> None:
    data = pcm_wav(7.3, rate=8000, channels=1, width=2, seed=7)  # 116 800 bytes of frames
    max_bytes = 30_000
    parts = prepare_parts(data, filename="rec.wav", max_bytes=max_bytes, max_seconds=None)
    assert len(parts) == math.ceil((len(data) - 44) / (max_bytes - 44))
    assert all(len(part.data) <= max_bytes for part in parts)
    sizes = {len(part.data) for part in parts}
    assert max(sizes) - min(sizes) <= 2  # equal-ish: at most one frame apart
    check_split(data, parts)


def test_wav_split_by_both_limits_odd_frame_count() -> None:
    data = pcm_wav(5.0, rate=44100, channels=2, width=2, seed=3)
    parts = prepare_parts(data, filename="x.wav", max_bytes=300_000, max_seconds=1.5)
    assert all(len(part.data) <= 300_000 for part in parts)
    assert all(part.duration_seconds is not None and part.duration_seconds <= 1.5 for part in parts)
    check_split(data, parts)


def test_demo_recording_split(demo_call: DemoCall) -> None:
    data = make_wav(demo_call)
    assert wav_duration(data) == 6.0
    parts = prepare_parts(data, filename=f"{demo_call.uniq}.wav", max_seconds=2.5, max_bytes=40_000)
    assert [part.offset_seconds for part in parts] == [0.0, 2.0, 4.0]
    check_split(data, parts)
    # parts carry audio only: the metadata chunk is not copied into them
    assert all(read_wav_metadata(part.data) is None for part in parts)


def test_small_recording_is_returned_unchanged(demo_call: DemoCall) -> None:
    data = make_wav(demo_call)
    [part] = prepare_parts(data, filename="call.wav")
    assert part.data is data
    assert (part.filename, part.offset_seconds, part.duration_seconds) == ("call.wav", 0.0, 6.0)
    metadata = read_wav_metadata(part.data)
    assert metadata is not None and metadata["uniq"] == demo_call.uniq


def test_wav_is_recognised_by_its_header_not_its_name() -> None:
    data = pcm_wav(4.0)
    parts = prepare_parts(data, filename="recording.mp3", max_seconds=2.0)
    assert [part.filename for part in parts] == ["recording-part01.wav", "recording-part02.wav"]
    check_split(data, parts)


def test_limits_too_small_for_one_frame() -> None:
    with pytest.raises(ValueError, match="cannot hold a single frame"):
        prepare_parts(pcm_wav(1.0), filename="a.wav", max_bytes=45)
    with pytest.raises(ValueError, match="max_seconds"):
        prepare_parts(pcm_wav(1.0), filename="a.wav", max_seconds=0)


def alaw_wav(seconds: float, rate: int = 8000) -> bytes:
    """A-law WAV (format 6): the wave module cannot read it; its length comes from the header."""
    samples = bytes(int(seconds * rate))
    fmt = struct.pack("<HHIIHHH", 6, 1, rate, rate, 1, 8, 0)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_wav_duration() -> None:
    assert wav_duration(pcm_wav(2.5, rate=16000, channels=2)) == 2.5
    assert wav_duration(alaw_wav(3.0)) == 3.0
    assert wav_duration(b"ID3" + bytes(100)) is None
    assert wav_duration(b"RIFF\0\0\0\0WAVEjunk") is None


# -------------------------------------------------------------------------------- other formats


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)


@pytest.mark.usefixtures("no_ffmpeg")
def test_large_mp3_without_ffmpeg() -> None:
    data = b"ID3" + bytes(int(31.2 * MB) - 3)
    with pytest.raises(AudioTooLarge) as raised:
        prepare_parts(data, filename="call.mp3")
    assert str(raised.value) == (
        "recording is 31.2 MB, over the 25 MB upload limit, and no ffmpeg is available to re-encode it"
    )
    assert isinstance(raised.value, ValueError)


@pytest.mark.usefixtures("no_ffmpeg")
def test_mp3_within_the_byte_limit_without_ffmpeg_is_kept() -> None:
    data = b"ID3" + bytes(5000)
    assert prepare_parts(data, filename="call.mp3", max_seconds=1.0) == [AudioPart(data, "call.mp3", 0.0, None)]


@pytest.mark.usefixtures("no_ffmpeg")
def test_unreadable_wav_too_long_without_ffmpeg() -> None:
    with pytest.raises(AudioTooLarge, match=r"recording is 20\.0 s long, over the 10 s limit, and no ffmpeg"):
        prepare_parts(alaw_wav(20.0), filename="call.wav", max_seconds=10.0)


FAKE_FFMPEG = """\
import json, pathlib, sys
args = sys.argv[1:]
here = pathlib.Path(__file__)
with here.with_suffix(".log").open("a") as log:
    log.write(json.dumps(args) + "\\n")
if "-f" not in args:  # probing: ffmpeg -i input, no output
    sys.stderr.write("Input #0, mp3, from 'input.mp3':\\n  Duration: {duration}, start: 0.000000, bitrate: 32 kb/s\\n")
    sys.exit(1)
if {fail}:
    sys.stderr.write("[mp3 @ 0x1] Header missing\\nError while decoding stream #0:0: Invalid data found\\n")
    sys.exit(1)
step = float(args[args.index("-segment_time") + 1])
listing = pathlib.Path(args[args.index("-segment_list") + 1])
total, start, rows = {total}, 0.0, []
while start < total - 1e-6:
    end = min(total, start + step)
    path = pathlib.Path(args[-1] % len(rows))
    path.write_bytes(b"ID3 part %d" % len(rows))
    rows.append(f"{{path.name}},{{start:.6f}},{{end:.6f}}")
    start = end
listing.write_text("\\n".join(rows) + "\\n")
"""


def fake_ffmpeg(folder: Path, *, seconds: float, fail: bool = False) -> Path:
    """A stand-in for ffmpeg: reports ``seconds`` when probed, writes segments and their CSV list."""
    minutes, rest = divmod(seconds, 60)
    duration = f"00:{int(minutes):02d}:{rest:05.2f}"
    script = folder / "ffmpeg"
    script.write_text(f"#!{sys.executable}\n" + FAKE_FFMPEG.format(duration=duration, fail=fail, total=seconds))
    script.chmod(0o755)
    return script


def ffmpeg_calls(script: Path) -> list[list[str]]:
    return [json.loads(line) for line in script.with_suffix(".log").read_text().splitlines()]


def test_long_mp3_is_reencoded_in_equal_segments(tmp_path: Path) -> None:
    ffmpeg = fake_ffmpeg(tmp_path, seconds=150.0)
    parts = prepare_parts(b"ID3 original", filename="s3/key/call.mp3", max_seconds=60.0, ffmpeg=str(ffmpeg))
    assert [(part.filename, part.offset_seconds, part.duration_seconds) for part in parts] == [
        ("call-part01.mp3", 0.0, 50.0),
        ("call-part02.mp3", 50.0, 50.0),
        ("call-part03.mp3", 100.0, 50.0),
    ]
    assert [part.data for part in parts] == [b"ID3 part 0", b"ID3 part 1", b"ID3 part 2"]
    probe, encode = ffmpeg_calls(ffmpeg)
    assert probe[-1].endswith("input.mp3")
    command = " ".join(encode)
    for option in ("-ac 1", "-ar 16000", "-b:a 32k", "-f segment", "-segment_time 50.000", "-segment_list_type csv"):
        assert option in command


def test_short_mp3_with_ffmpeg_is_kept_with_its_probed_length(tmp_path: Path) -> None:
    ffmpeg = fake_ffmpeg(tmp_path, seconds=42.5)
    assert prepare_parts(b"ID3 x", filename="call.mp3", ffmpeg=str(ffmpeg)) == [
        AudioPart(b"ID3 x", "call.mp3", 0.0, 42.5)
    ]


def test_ffmpeg_failure(tmp_path: Path) -> None:
    ffmpeg = fake_ffmpeg(tmp_path, seconds=1500.0, fail=True)
    with pytest.raises(AudioTooLarge, match="over the 1400 s limit, and ffmpeg could not re-encode it: Error while"):
        prepare_parts(b"ID3 x", filename="call.mp3", ffmpeg=str(ffmpeg))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_real_ffmpeg(tmp_path: Path) -> None:
    source = tmp_path / "call.wav"
    source.write_bytes(pcm_wav(10.0, rate=8000))
    mp3 = tmp_path / "call.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), "-b:a", "64k", str(mp3)], check=True)
    parts = prepare_parts(mp3.read_bytes(), filename="call.mp3", max_seconds=4.0)
    assert len(parts) == 3
    assert parts[0].offset_seconds == 0.0
    assert all(part.filename.endswith(".mp3") and part.data for part in parts)
    assert all(part.duration_seconds is not None and part.duration_seconds <= 4.0 for part in parts)
    assert sum(part.duration_seconds or 0.0 for part in parts) == pytest.approx(10.0, abs=0.2)


# ----------------------------------------------------------------------------------- transcripts


def test_join_transcripts_shifts_times() -> None:
    first = AudioPart(b"", "a-part01.wav", 0.0, 700.0)
    second = AudioPart(b"", "a-part02.wav", 700.0, 650.5)
    joined = join_transcripts(
        [
            (second, {"text": " Да, записываю. ", "segments": [{"id": 0, "start": 1.0, "end": 3.5, "text": "Да"}]}),
            (
                first,
                {
                    "text": "Клиника «Здоровье». Хочу записаться.",
                    "language": "russian",
                    "segments": [
                        {"id": 0, "start": 0.0, "end": 2.0, "text": "Клиника «Здоровье»."},
                        {"id": 1, "start": 2.5, "end": 4.0, "text": "Хочу записаться.", "avg_logprob": -0.2},
                    ],
                },
            ),
        ]
    )
    assert joined["text"] == "Клиника «Здоровье». Хочу записаться. Да, записываю."
    assert joined["language"] == "russian"
    assert joined["duration"] == 1350.5
    assert joined["segments"] == [
        {"id": 0, "start": 0.0, "end": 2.0, "text": "Клиника «Здоровье»."},
        {"id": 1, "start": 2.5, "end": 4.0, "text": "Хочу записаться.", "avg_logprob": -0.2},
        {"id": 2, "start": 701.0, "end": 703.5, "text": "Да"},
    ]


def test_join_transcripts_text_only_and_words() -> None:
    parts = [AudioPart(b"", "p1.mp3", 0.0, None), AudioPart(b"", "p2.mp3", 30.0, None)]
    joined = join_transcripts(
        [(parts[0], {"text": "Алло."}), (parts[1], {"text": "", "words": [{"word": "Да", "start": 0.5, "end": 0.7}]})]
    )
    assert joined == {"text": "Алло.", "words": [{"word": "Да", "start": 30.5, "end": 30.7}]}
    assert join_transcripts([]) == {"text": ""}
