"""Making recordings uploadable, from disk: WAV cut in pure Python, MP3 stream-copied, others re-encoded with the
packaged ffmpeg (never the machine's: PATH holds no ffmpeg here), the parts' times joined back."""

from __future__ import annotations

import itertools
import re
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from callsight.transcription import audio
from callsight.transcription.audio import (
    MAX_UPLOAD_BYTES,
    AudioPart,
    UnusableAudio,
    join_transcripts,
    part_filename,
    prepare_parts,
)
from callsight.transcription.ffmpeg import FfmpegMissing, ffmpeg_path
from callsight.transcription.models import GPT4O_MAX_SECONDS

MB = 1024 * 1024
COMMENT = "callsight test recording: a sine, no dialogue"
PART_NAME = re.compile(r"^(?P<stem>.+)-part(?P<index>\d{2})-at(?P<ms>\d+)ms\.(?P<ext>[a-z0-9]+)$")


# ------------------------------------------------------------------------------------ recordings


def run_ffmpeg(*arguments: str) -> None:
    subprocess.run([ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *arguments],
                   check=True, timeout=300)


def probe(path: Path) -> tuple[float, str, dict[str, str]]:
    """The file's real length (decoded to nothing), its first audio stream's description and its tags."""
    completed = subprocess.run([ffmpeg_path(), "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:a:0",
                                "-f", "null", "-"], capture_output=True, timeout=300, check=True)
    log = completed.stderr.decode("utf-8", "replace")
    times = re.findall(r"time=(\d+):(\d{2}):(\d{2}\.\d+)", log)
    hours, minutes, seconds = times[-1]
    stream = re.search(r"Audio: (.+)", log)
    assert stream is not None
    tags = dict(re.findall(r"^\s+(\w+)\s+: (.*)$", log.split("Stream mapping")[0], re.MULTILINE))
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds), stream.group(1), tags


def looped(folder: Path, name: str, *, seconds: int, codec: list[str], rate: int, comment: str = COMMENT) -> Path:
    """A recording of ``seconds`` (a multiple of 60): one minute encoded, then stream-copied in a loop (fast)."""
    target = folder / name
    if target.is_file():
        return target
    minute = folder / f"minute-{name}"
    run_ffmpeg("-f", "lavfi", "-i", f"sine=f=440:r={rate}:d=60", "-ac", "1", *codec, str(minute))
    run_ffmpeg("-stream_loop", str(seconds // 60 - 1), "-i", str(minute), "-c", "copy", "-metadata",
               f"comment={comment}", str(target))
    minute.unlink()
    return target


def pcm_wav(path: Path, seconds: float, *, rate: int = 8000, channels: int = 1, width: int = 2,
            info: bytes | None = None) -> Path:
    """A PCM WAV of a repeating ramp, with a ``LIST``/``INFO`` chunk before the audio if ``info`` is given."""
    frames = int(seconds * rate)
    frame = channels * width
    pattern = bytes(range(256)) * frame
    data = (pattern * (frames * frame // len(pattern) + 1))[: frames * frame]
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * frame, frame, width * 8)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if info is not None:
        chunks += b"LIST" + struct.pack("<I", len(info)) + info + b"\0" * (len(info) % 2)
    chunks += b"data" + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def info_chunk(comment: str) -> bytes:
    text = comment.encode() + b"\0"
    return b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text + b"\0" * (len(text) % 2)


def frames_of(path: Path) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(str(path), "rb") as reader:
        return (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()), reader.readframes(
            reader.getnframes())


def list_chunk(path: Path) -> bytes | None:
    data = path.read_bytes()
    at = data.find(b"LIST")
    if at < 0:
        return None
    (size,) = struct.unpack("<I", data[at + 4: at + 8])
    return data[at + 8: at + 8 + size]


def big_recordings(folder: Path) -> dict[str, Path]:
    """Recordings over 25 MB and over 1,400 s: MP3 (44.1 kHz 128 kbps), OGG/Opus (128 kbps), WAV (8 kHz 16-bit)."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "big-call.wav"
    if not wav.is_file():
        pcm_wav(wav, 1740.0, info=info_chunk(COMMENT))
    return {
        "mp3": looped(folder, "big-call.mp3", seconds=1920, rate=44100, codec=["-c:a", "libmp3lame", "-b:a", "128k"]),
        "ogg": looped(folder, "big-call.ogg", seconds=1920, rate=48000, codec=["-c:a", "libopus", "-b:a", "128k"]),
        "wav": wav,
    }


@pytest.fixture(autouse=True)
def no_ffmpeg_on_path(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds no ffmpeg: only the packaged one can be what the code runs."""
    empty = tmp_path_factory.mktemp("empty-path")
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("ffmpeg") is None
    assert Path(ffmpeg_path()).is_file()


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return big_recordings(tmp_path_factory.getbasetemp() / "big-recordings")


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder


def check_contiguous(parts: list[AudioPart], total: float, *, tolerance: float) -> None:
    assert parts[0].offset_seconds == 0.0
    for before, after in itertools.pairwise(parts):
        assert before.duration_seconds is not None
        assert after.offset_seconds == pytest.approx(before.offset_seconds + before.duration_seconds, abs=tolerance)
    last = parts[-1]
    assert last.duration_seconds is not None
    assert last.offset_seconds + last.duration_seconds == pytest.approx(total, abs=tolerance)


def check_names(parts: list[AudioPart], stem: str, extension: str) -> None:
    for index, part in enumerate(parts, start=1):
        match = PART_NAME.match(part.filename)
        assert match is not None, part.filename
        assert (match["stem"], int(match["index"]), match["ext"]) == (stem, index, extension)
        assert int(match["ms"]) == round(part.offset_seconds * 1000)
        assert part.path.name == part.filename


# --------------------------------------------------------------------- over 25 MB and over 1,400 s


@pytest.mark.parametrize("kind", ["mp3", "ogg", "wav"])
def test_a_recording_over_25_mb_and_1400_s_is_split_into_parts_within_both(
        kind: str, big: dict[str, Path], work: Path) -> None:
    source = big[kind]
    total, source_stream, source_tags = probe(source)
    assert source.stat().st_size > MAX_UPLOAD_BYTES and total > GPT4O_MAX_SECONDS
    parts = prepare_parts(source, work, filename=f"call-77.{kind}", max_seconds=GPT4O_MAX_SECONDS)
    assert len(parts) >= 2
    extension = "wav" if kind == "wav" else "mp3"
    check_names(parts, "call-77", extension)
    for part in parts:
        seconds, stream, tags = probe(part.path)
        assert part.size <= MAX_UPLOAD_BYTES
        assert seconds <= GPT4O_MAX_SECONDS
        assert part.duration_seconds == pytest.approx(seconds, abs=0.2)
        assert tags.get("comment") == COMMENT  # each part keeps the recording's tags
        if kind == "mp3":  # stream-copied: the source's own encoding (44.1 kHz, 128 kbps), not the re-encode's
            assert "44100 Hz" in stream and "128 kb/s" in stream and stream == source_stream
        if kind == "ogg":  # re-encoded to mono 16 kHz 32 kbps MP3
            assert "mp3" in stream and "16000 Hz" in stream
    check_contiguous(parts, total, tolerance=0.2)
    assert source_tags.get("comment") == COMMENT


def test_wav_parts_are_exact_cuts_of_the_frames_with_the_info_chunk_copied(big: dict[str, Path], work: Path) -> None:
    source = big["wav"]
    parts = prepare_parts(source, work, filename="call-77.wav", max_seconds=GPT4O_MAX_SECONDS)
    params, frames = frames_of(source)
    joined = b""
    position = 0
    for part in parts:
        part_params, part_frames = frames_of(part.path)
        assert part_params == params
        assert part.offset_seconds == position / params[2]  # exact, in frames
        assert list_chunk(part.path) == info_chunk(COMMENT)
        joined += part_frames
        position += len(part_frames) // (params[0] * params[1])
    assert joined == frames
    sizes = [part.size for part in parts]
    assert max(sizes) - min(sizes) <= 2 * params[0] * params[1]  # equal-ish parts, not full ones and a short rest


# ------------------------------------------------------------------------------------------- WAV


@pytest.mark.parametrize(("rate", "channels", "width"), [(8000, 1, 2), (44100, 2, 2), (11025, 1, 1), (22050, 1, 3)])
def test_wav_split_by_length_and_by_size(rate: int, channels: int, width: int, tmp_path: Path, work: Path) -> None:
    source = pcm_wav(tmp_path / "call.wav", 10.0, rate=rate, channels=channels, width=width)
    by_length = prepare_parts(source, work, filename="call.wav", max_seconds=3.0)
    assert len(by_length) == 4 and all((p.duration_seconds or 0) <= 3.0 for p in by_length)
    max_bytes = source.stat().st_size // 3
    by_size = prepare_parts(source, work, filename="call.wav", max_bytes=max_bytes)
    assert len(by_size) == 4 and all(p.size <= max_bytes for p in by_size)
    for parts in (by_length, by_size):
        joined = b"".join(frames_of(part.path)[1] for part in parts)
        assert joined == frames_of(source)[1]
        check_contiguous(parts, 10.0, tolerance=1e-9)


def test_a_recording_within_both_limits_is_uploaded_as_it_is(tmp_path: Path, work: Path) -> None:
    source = pcm_wav(tmp_path / "stored.wav", 2.0, info=info_chunk(COMMENT))
    assert prepare_parts(source, work, filename="call-5.wav") == [AudioPart(source, "call-5.wav", 0.0, 2.0)]
    mp3 = tmp_path / "stored.mp3"
    run_ffmpeg("-f", "lavfi", "-i", "sine=r=8000:d=5", "-c:a", "libmp3lame", "-b:a", "32k", str(mp3))
    [part] = prepare_parts(mp3, work, filename="call-6.mp3")
    assert (part.path, part.filename, part.offset_seconds) == (mp3, "call-6.mp3", 0.0)
    assert part.duration_seconds == pytest.approx(5.0, abs=0.25)  # the header counts the encoder's padding
    assert list(work.iterdir()) == []  # nothing written: no ffmpeg log or part left behind


def test_a_wav_cut_short_counts_the_audio_that_is_there(tmp_path: Path, work: Path) -> None:
    whole = pcm_wav(tmp_path / "whole.wav", 4.0).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) - 8000 * 2])  # one second missing; the header still says four
    parts = prepare_parts(cut, work, filename="cut.wav", max_seconds=1.0)
    assert len(parts) == 3 and sum(p.duration_seconds or 0 for p in parts) == 3.0


def test_a_wav_that_is_not_pcm_is_re_encoded_with_its_length_kept(tmp_path: Path, work: Path) -> None:
    alaw = tmp_path / "alaw.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=r=8000:d=20", "-c:a", "pcm_alaw", "-metadata", "comment=x", str(alaw))
    parts = prepare_parts(alaw, work, filename="call-9.wav", max_seconds=8.0)
    assert len(parts) == 3
    check_names(parts, "call-9", "mp3")
    check_contiguous(parts, 20.0, tolerance=0.1)
    assert all(probe(p.path)[0] <= 8.0 for p in parts)


def test_limits_that_cannot_hold_a_frame_are_refused(tmp_path: Path, work: Path) -> None:
    source = pcm_wav(tmp_path / "a.wav", 1.0)
    with pytest.raises(ValueError, match="cannot hold a single frame"):
        prepare_parts(source, work, filename="a.wav", max_bytes=45)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        prepare_parts(source, work, filename="a.wav", max_seconds=0)


# ---------------------------------------------------------------------------------------- ffmpeg


def test_a_webm_without_a_length_in_its_header_is_measured_by_decoding(tmp_path: Path, work: Path) -> None:
    webm = tmp_path / "browser.webm"
    with webm.open("wb") as out:  # written to a pipe, as a browser's MediaRecorder does: no duration, no cues
        subprocess.run([ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        "sine=r=16000:d=30", "-c:a", "libopus", "-f", "webm", "pipe:1"], stdout=out, check=True,
                       timeout=60)
    header = subprocess.run([ffmpeg_path(), "-hide_banner", "-i", str(webm)], capture_output=True, timeout=60,
                            check=False)
    assert b"Duration: N/A" in header.stderr
    [whole] = prepare_parts(webm, work, filename="browser.webm")
    assert whole.path == webm and whole.duration_seconds == pytest.approx(30.0, abs=0.1)
    parts = prepare_parts(webm, work, filename="browser.webm", max_seconds=12.0)
    assert len(parts) == 3
    check_contiguous(parts, 30.0, tolerance=0.1)


def test_an_mp3_with_an_unknown_extension_is_re_encoded_to_one_uploadable_file(tmp_path: Path, work: Path) -> None:
    odd = tmp_path / "x.audio"
    run_ffmpeg("-f", "lavfi", "-i", "sine=r=8000:d=4", "-c:a", "libmp3lame", "-f", "mp3", str(odd))
    [part] = prepare_parts(odd, work, filename="call-3.audio")
    assert part.filename == "call-3.mp3" and part.path.parent == work
    assert probe(part.path)[0] == pytest.approx(4.0, abs=0.1)


def test_unreadable_audio_is_the_calls_own_failure_with_a_reason(tmp_path: Path, work: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"<html><body>404 Not Found</body></html>" * 100)
    with pytest.raises(UnusableAudio, match=r"ffmpeg finds no audio in the recording: .*Invalid data"):
        prepare_parts(junk, work, filename="junk.mp3")
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(UnusableAudio, match="empty"):
        prepare_parts(empty, work, filename="empty.mp3")


def test_ffmpeg_hanging_is_stopped_by_its_timeout(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hanging = tmp_path / "ffmpeg"
    hanging.write_text("#!/bin/sh\nexec /bin/sleep 60\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(audio, "_PROBE_TIMEOUT_SECONDS", 0.5)
    source = tmp_path / "call.mp3"
    source.write_bytes(b"ID3" + bytes(1000))
    with pytest.raises(UnusableAudio, match=r"ffmpeg timed out after 0\.5 s \(probe\)"):
        prepare_parts(source, work, filename="call.mp3", ffmpeg=str(hanging))


def test_ffmpeg_failing_names_its_last_message(tmp_path: Path, work: Path) -> None:
    failing = tmp_path / "ffmpeg"  # reads the header like ffmpeg, then fails to cut
    failing.write_text(
        "#!/bin/sh\ncase \"$*\" in *segment*) echo 'Error while cutting: disk full' >&2; exit 1;; esac\n"
        "echo \"Input #0, ogg, from 'x':\" >&2\necho '  Duration: 00:30:00.00, start: 0, bitrate: 32 kb/s' >&2\n"
        "echo '  Stream #0:0: Audio: opus, 48000 Hz, mono, fltp' >&2\nexit 1\n")
    failing.chmod(0o755)
    source = tmp_path / "call.ogg"
    source.write_bytes(b"OggS" + bytes(1000))
    with pytest.raises(UnusableAudio, match=r"ffmpeg could not read the recording \(encode\): Error while cutting"):
        prepare_parts(source, work, filename="call.ogg", max_seconds=1400.0, ffmpeg=str(failing))


def test_without_the_ffmpeg_layer_the_call_fails_naming_it(tmp_path: Path, work: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise FfmpegMissing("no ffmpeg binary in /opt/python/imageio_ffmpeg/binaries")

    monkeypatch.setattr(audio, "ffmpeg_path", missing)
    source = tmp_path / "call.ogg"
    source.write_bytes(b"OggS" + bytes(1000))
    with pytest.raises(UnusableAudio, match="FfmpegLayer"):
        prepare_parts(source, work, filename="call.ogg")
    wav = pcm_wav(tmp_path / "call.wav", 3.0)  # a PCM WAV needs no ffmpeg
    assert len(prepare_parts(wav, work, filename="call.wav", max_seconds=1.0)) == 3


# ------------------------------------------------------------------------------------------ join


def test_part_names_follow_the_contract() -> None:
    assert part_filename("call-77", 2, 1372.4, "mp3") == "call-77-part02-at1372400ms.mp3"
    assert part_filename("c", 1, 0.0, "wav") == "c-part01-at0ms.wav"


def test_join_shifts_times_and_renumbers_segments(tmp_path: Path) -> None:
    first = AudioPart(tmp_path / "a", "a-part01-at0ms.wav", 0.0, 700.0)
    second = AudioPart(tmp_path / "b", "a-part02-at700000ms.wav", 700.0, 650.5)
    joined = join_transcripts([
        (second, {"text": "вторая", "segments": [{"id": 0, "start": 1.0, "end": 2.5, "text": "вторая"}],
                  "words": [{"word": "вторая", "start": 1.0, "end": 2.5}]}),
        (first, {"text": " первая ", "language": "russian",
                 "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": "первая"},
                              {"id": 1, "start": 1.0, "end": 2.0, "text": "часть"}]}),
    ])
    assert joined["text"] == "первая вторая"
    assert [(s["id"], s["start"], s["end"]) for s in joined["segments"]] == [(0, 0.0, 1.0), (1, 1.0, 2.0),
                                                                            (2, 701.0, 702.5)]
    assert joined["words"] == [{"word": "вторая", "start": 701.0, "end": 702.5}]
    assert joined["language"] == "russian" and joined["duration"] == 1350.5


def test_join_of_plain_texts_has_no_segments(tmp_path: Path) -> None:
    parts = [AudioPart(tmp_path / "1", "p1.mp3", 0.0, None), AudioPart(tmp_path / "2", "p2.mp3", 30.0, None)]
    joined = join_transcripts([(parts[0], {"text": "а"}), (parts[1], {"text": "б", "duration": 12.0})])
    assert joined == {"text": "а б", "duration": 42.0}
