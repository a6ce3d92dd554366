"""Real recordings for demo calls: MP3, WAV and OGG/Opus at telephony quality, as long as the call.

A call's recording (:func:`make_recording`) lasts the call's ``duration`` and is in the call's format
(:attr:`DemoCall.recording_format`: mostly MP3 at 16-32 kbit/s, some WAV, some OGG/Opus), 8 kHz mono. Its speech
is deterministic speech-like tone bursts (a higher voice for the administrator, a lower one for the patient)
placed on a timeline of the scenario's lines (a long call has long pauses between them). The JSON of
:func:`recording_metadata` (the call and that timeline: each line's ``[start, end, speaker, text]`` in seconds)
is in the recording's ``comment`` tag: WAV ``LIST``/``INFO``/``ICMT``, MP3 ID3v2.4 ``COMM``, OGG the Vorbis
comment ``comment=``. So the stub transcription service recovers the "transcript" of a whole recording, or of
a part cut from it (the tags travel with each part), from the uploaded bytes alone.

MP3 and OGG are encoded by the packaged ffmpeg (:func:`callsight.transcription.ffmpeg.ffmpeg_path`, never one on
``PATH``), PCM piped in. Encoded files are cached on disk (:func:`cache_dir`), keyed by everything they are made
of, so a demo or a test run pays for each recording once. :func:`make_wav` keeps the old small WAV (at most six
seconds) that unit tests use.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from callsight.transcription.ffmpeg import ffmpeg_path
from infra.stubs.clinic_calls import RECORDING_CONTENT_TYPES, DemoCall, RecordingFormat

SAMPLE_RATE: Final = 8000
SAMPLE_WIDTH: Final = 2  # bytes: 16-bit PCM
MAX_SECONDS: Final = 6.0  # make_wav's excerpt
MIN_SECONDS: Final = 0.5
#: bump when what a recording is made of changes: cached files of older versions are not used
GENERATOR_VERSION: Final = 3
OPUS_BITRATE_KBPS: Final = 16
_PITCH: Final[dict[str, float]] = {"administrator": 215.0, "patient": 128.0}
_CHARS_PER_SECOND: Final = 14.0
_FFMPEG_TIMEOUT: Final = 300.0
_DURATION: Final = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_PROGRESS_TIME: Final = re.compile(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class Recording:
    data: bytes
    extension: str  #: "mp3", "wav", "ogg"
    content_type: str


@dataclass(frozen=True, slots=True)
class AudioProbe:
    """What the packaged ffmpeg reads from a file: its duration (``None``: unknown) and its tags."""

    seconds: float | None
    tags: dict[str, str]


# ---------------------------------------------------------------------------------------- metadata


def speech_timeline(script: Sequence[tuple[str, str]], seconds: float, seed: str) -> list[list[Any]]:
    """Each line's ``[start, end, speaker, text]`` (seconds) so that the dialogue, said once, fills ``seconds``:
    lines last in proportion to their length with pauses between turns; in a call longer than its dialogue the
    pauses grow (the patient on hold, a doctor fetched), in a shorter one everything is quicker."""
    if not script or seconds <= 0:
        return []
    rng = random.Random(f"timeline:{seed}")
    natural = [(max(0.8, min(15.0, len(text) / _CHARS_PER_SECOND)), rng.uniform(0.25, 0.7)) for _, text in script]
    speaking = sum(speak for speak, _ in natural)
    pausing = sum(gap for _, gap in natural)
    if seconds >= speaking + pausing:
        speak_scale, gap_scale = 1.0, (seconds - speaking) / pausing
    else:
        speak_scale = gap_scale = seconds / (speaking + pausing)
    timeline: list[list[Any]] = []
    cursor = 0.0
    for (speaker, text), (speak, gap) in zip(script, natural, strict=True):
        start, end = cursor, min(seconds, cursor + speak * speak_scale)
        timeline.append([round(start, 3), round(end, 3), speaker, text])
        cursor = end + gap * gap_scale
    return timeline


def recording_metadata(call: DemoCall, *, lines: Sequence[Sequence[Any]] | None = None) -> dict[str, Any]:
    """The JSON of the recording's ``comment`` tag; ``lines`` (the timeline) only for a full-length recording."""
    metadata: dict[str, Any] = {
        "uniq": call.uniq,
        "note_id": call.note_id,
        "note_type": call.note_type,
        "duration": call.duration,
        "call_status": call.call_status,
        "scenario": call.scenario.to_dict() if call.scenario is not None else None,
    }
    if lines is not None:
        metadata["lines"] = [list(line) for line in lines]
    return metadata


def _comment(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------- recordings


def make_recording(call: DemoCall, *, cache: Path | None = None) -> Recording:
    """The call's recording: ``duration`` seconds (at least half a second) in the call's format, cached on disk."""
    seconds = max(MIN_SECONDS, float(call.duration))
    script = call.scenario.script if call.scenario is not None else []
    lines = speech_timeline(script, seconds, call.uniq)
    fmt = call.recording_format
    data = build_recording(
        recording_metadata(call, lines=lines),
        seconds=seconds,
        lines=lines,
        seed=call.uniq,
        fmt=fmt,
        bitrate_kbps=call.recording_bitrate_kbps,
        cache=cache,
    )
    return Recording(data, fmt, RECORDING_CONTENT_TYPES[fmt])


def build_recording(
    metadata: Mapping[str, Any],
    *,
    seconds: float,
    lines: Sequence[Sequence[Any]],
    seed: str,
    fmt: RecordingFormat,
    bitrate_kbps: int = 24,
    sample_rate: int = SAMPLE_RATE,
    cache: Path | None = None,
) -> bytes:
    """A recording of ``seconds`` with speech on the ``lines`` timeline (``[start, end, speaker, ...]``) and
    ``metadata`` in its comment tag. WAV is 16-bit PCM (built here); MP3 (``bitrate_kbps``) and OGG/Opus are
    encoded by the packaged ffmpeg. Cached in ``cache`` (default :func:`cache_dir`)."""
    comment = _comment(metadata)
    key = hashlib.sha256(
        json.dumps([GENERATOR_VERSION, fmt, bitrate_kbps, sample_rate, seconds, seed, comment, list(map(list, lines))],
                   ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:32]
    folder = cache if cache is not None else cache_dir()
    path = folder / f"{key}.{fmt}"
    try:
        return path.read_bytes()
    except OSError:
        pass
    pcm = _synthesize(seconds, lines, seed, sample_rate)
    if fmt == "wav":
        data = _wav(pcm, comment, sample_rate)
    elif fmt == "mp3":
        codec = ["-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-compression_level", "9", "-id3v2_version", "0"]
        data = _id3_comment(comment) + _strip_id3(_encode(pcm, sample_rate, "mp3", codec))
    elif fmt == "ogg":  # compression level 0: a third of the default's encoding time, the same size
        codec = ["-c:a", "libopus", "-b:a", f"{OPUS_BITRATE_KBPS}k", "-application", "voip", "-compression_level", "0"]
        data = _encode(pcm, sample_rate, "ogg", [*codec, "-metadata", f"comment={comment}"])
    else:
        raise ValueError(f"unknown recording format {fmt!r}")
    _store(path, data)
    return data


@functools.cache
def cache_dir() -> Path:
    """Where encoded recordings are kept: ``v<GENERATOR_VERSION>`` in ``$CALLSIGHT_STUB_AUDIO_CACHE`` or in
    ``callsight-stub-audio`` of the temp directory; other versions' folders there are removed."""
    root = Path(os.environ.get("CALLSIGHT_STUB_AUDIO_CACHE") or Path(tempfile.gettempdir()) / "callsight-stub-audio")
    folder = root / f"v{GENERATOR_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old != folder and old.is_dir() and re.fullmatch(r"v\d+", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _store(path: Path, data: bytes) -> None:
    """Writes atomically (another process may generate the same file at the same time); a failure is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".part-", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    except OSError:
        pass


def _encode(pcm: bytes, sample_rate: int, extension: str, codec: list[str]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="callsight-stub-encode-") as folder:
        out = Path(folder) / f"out.{extension}"
        pcm_in = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
        exact = ["-fflags", "+bitexact", "-flags:a", "+bitexact"]  # no random Ogg serial, no encoder tag
        command = [ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", *pcm_in, *codec, *exact, str(out)]
        done = subprocess.run(command, input=pcm, capture_output=True, timeout=_FFMPEG_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {extension}: {done.stderr.decode('utf-8', 'replace')[-300:]}")
        return out.read_bytes()


def _wav(pcm: bytes, comment: str, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(SAMPLE_WIDTH)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    riff = buffer.getvalue()
    text = comment.encode("utf-8") + b"\0"
    info = b"ICMT" + struct.pack("<I", len(text)) + text + (b"\0" if len(text) % 2 else b"")
    list_chunk = b"LIST" + struct.pack("<I", 4 + len(info)) + b"INFO" + info
    body = riff[12:] + list_chunk
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def _synchsafe(value: int) -> bytes:
    return bytes([(value >> 21) & 0x7F, (value >> 14) & 0x7F, (value >> 7) & 0x7F, value & 0x7F])


def _id3_comment(comment: str) -> bytes:
    """An ID3v2.4 tag with one ``COMM`` frame: UTF-8, language ``rus``, empty description, the comment."""
    payload = b"\x03rus\x00" + comment.encode("utf-8")
    frame = b"COMM" + _synchsafe(len(payload)) + b"\0\0" + payload
    return b"ID3\x04\x00\x00" + _synchsafe(len(frame)) + frame


def _strip_id3(data: bytes) -> bytes:
    if data[:3] != b"ID3" or len(data) < 10:
        return data
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return data[10 + size :]


# ----------------------------------------------------------------------------------------- reading


def probe_audio(data: bytes, extension: str) -> AudioProbe:
    """Duration and tags of an audio file by the packaged ffmpeg: the container's duration, or when it has
    none the decoded length; ``seconds`` is ``None`` when ffmpeg cannot read the bytes."""
    with tempfile.TemporaryDirectory(prefix="callsight-stub-probe-") as folder:
        path = Path(folder) / f"upload.{extension or 'bin'}"
        path.write_bytes(data)
        return probe_file(path)


def probe_file(path: Path) -> AudioProbe:
    """:func:`probe_audio` of a file: one ffmpeg run writes the container's tags and the first stream's (where
    Ogg keeps its Vorbis comments) as ``ffmetadata`` and logs the duration."""
    binary = ffmpeg_path()
    container, stream = path.with_name(path.name + ".tags"), path.with_name(path.name + ".stream-tags")
    done = subprocess.run(
        [binary, "-hide_banner", "-nostdin", "-y", "-i", str(path), "-f", "ffmetadata", str(container),
         "-map_metadata", "0:s:0", "-f", "ffmetadata", str(stream)],
        capture_output=True,
        timeout=_FFMPEG_TIMEOUT,
        check=False,
    )
    log = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0 or "Audio:" not in log:
        return AudioProbe(None, {})
    tags = {**_read_ffmetadata(stream), **_read_ffmetadata(container)}
    match = _DURATION.search(log)
    if match is None:  # no duration in the container (a stream): decode it
        decoded = subprocess.run(
            [binary, "-hide_banner", "-nostdin", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            timeout=_FFMPEG_TIMEOUT,
            check=False,
        )
        times = _PROGRESS_TIME.findall(decoded.stderr.decode("utf-8", "replace"))
        if decoded.returncode != 0 or not times:
            return AudioProbe(None, tags)
        hours, minutes, secs = times[-1]
    else:
        hours, minutes, secs = match.groups()
    return AudioProbe(int(hours) * 3600 + int(minutes) * 60 + float(secs), tags)


def _read_ffmetadata(path: Path) -> dict[str, str]:
    try:
        return _ffmetadata(path.read_text("utf-8", "replace"))
    except OSError:
        return {}


def _ffmetadata(text: str) -> dict[str, str]:
    """The global tags of ffmpeg's ``ffmetadata`` output (``key=value``, ``=;#\\`` and newlines escaped)."""
    tags: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.split("\n"):
        pending += raw
        if pending.endswith("\\") and not pending.endswith("\\\\"):
            pending = pending[:-1] + "\n"
            continue
        logical.append(pending)
        pending = ""
    for line in logical:
        if line.startswith("["):
            break  # stream / chapter sections follow the global ones
        if not line or line.startswith((";", "#")):
            continue
        key, value = _split_unescaped(line)
        if key is not None:
            tags[key.lower()] = value
    return tags


def _split_unescaped(line: str) -> tuple[str | None, str]:
    key: list[str] = []
    value: list[str] = []
    target = key
    escaped = False
    found = False
    for char in line:
        if escaped:
            target.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and not found:
            found = True
            target = value
        else:
            target.append(char)
    return ("".join(key) if found else None), "".join(value)


def read_metadata(data: bytes, extension: str = "") -> dict[str, Any] | None:
    """The JSON of a recording's comment tag (WAV: read here; other formats: by the packaged ffmpeg)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return read_wav_metadata(data)
    return metadata_of(probe_audio(data, extension).tags)


def metadata_of(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The JSON object in the ``comment`` tag, or ``None``."""
    text = tags.get("comment")
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_wav_metadata(data: bytes) -> dict[str, Any] | None:
    """The JSON of the ``LIST``/``INFO``/``ICMT`` chunk, or ``None`` (not a WAV, no or bad comment)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    for chunk_id, payload in _chunks(data, 12, len(data)):
        if chunk_id != b"LIST" or payload[:4] != b"INFO":
            continue
        for sub_id, sub_payload in _chunks(payload, 4, len(payload)):
            if sub_id != b"ICMT":
                continue
            try:
                value = json.loads(sub_payload.rstrip(b"\0").decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return None
            return value if isinstance(value, dict) else None
    return None


def _chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    found: list[tuple[bytes, bytes]] = []
    offset = start
    while offset + 8 <= end:
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        payload_start = offset + 8
        payload_end = min(payload_start + size, end)
        found.append((chunk_id, data[payload_start:payload_end]))
        offset = payload_start + size + (size % 2)
    return found


# -------------------------------------------------------------------------------- the small old WAV


def make_wav(call: DemoCall) -> bytes:
    """A small WAV of the call: ``min(duration, 6)`` seconds (at least half a second), its metadata without a
    timeline (a transcription of it is the whole script; of a part cut from it, the script's share spread over
    ``audio_seconds``)."""
    seconds = max(MIN_SECONDS, min(float(call.duration), MAX_SECONDS))
    script = call.scenario.script if call.scenario is not None else []
    metadata = {**recording_metadata(call), "audio_seconds": seconds}  # the excerpt's length: parts can be placed
    return build_wav(metadata, seconds=seconds, lines=script, seed=call.uniq)


def build_wav(metadata: dict[str, Any], *, seconds: float, lines: Sequence[tuple[str, str]], seed: str) -> bytes:
    """A WAV of ``seconds`` with the turns of ``lines`` spoken one after another (repeated to fill it)."""
    timeline: list[list[Any]] = []
    cursor = 0.0
    rng = random.Random(hashlib.sha256(seed.encode("utf-8")).hexdigest())
    index = 0
    while lines and cursor < seconds:
        speaker, text = lines[index % len(lines)]
        length = max(2, min(9, len(text) // 6)) * 0.21
        timeline.append([cursor, min(seconds, cursor + length), speaker, text])
        cursor += length + rng.uniform(0.2, 0.45)
        index += 1
    return _wav(_synthesize(seconds, timeline, seed, SAMPLE_RATE), _comment(metadata), SAMPLE_RATE)


# -------------------------------------------------------------------------------------------- speech


def _synthesize(seconds: float, lines: Sequence[Sequence[Any]], seed: str, sample_rate: int) -> bytes:
    """16-bit mono PCM: on each line's ``[start, end)`` voiced "syllables" of the speaker's pitch, silence
    between; without lines a ring-back tone (425 Hz, one second on, one off)."""
    rng = random.Random(hashlib.sha256(seed.encode("utf-8")).hexdigest())
    total = int(seconds * sample_rate)
    out = array("h", bytes(2 * total))
    if not lines:
        tone = _syllable("ring", 0, sample_rate)
        for position in range(0, total, 2 * sample_rate):
            length = min(len(tone), total - position)
            out[position : position + length] = tone[:length]
    for line in lines:
        start, end, speaker = float(line[0]), float(line[1]), str(line[2])
        voice = speaker if speaker in _PITCH else "patient"
        position, stop = int(start * sample_rate), min(total, int(end * sample_rate))
        while position < stop:
            burst = _syllable(voice, rng.randrange(_BANK_SIZE), sample_rate)
            length = min(len(burst), stop - position)
            out[position : position + length] = burst[:length]
            position += length + int(rng.uniform(0.02, 0.07) * sample_rate)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


_BANK_SIZE: Final = 16


@functools.cache
def _syllable(voice: str, index: int, sample_rate: int = SAMPLE_RATE) -> array[int]:
    """One pre-rendered burst of a bank of ``_BANK_SIZE`` per voice (pitch, length and glide vary)."""
    rng = random.Random(f"{voice}:{index}")
    if voice == "ring":
        freq, length, amplitude, glide = 425.0, 1.0, 0.25, 0.0
    else:
        freq = _PITCH[voice] * rng.uniform(0.85, 1.15)
        length, amplitude, glide = rng.uniform(0.11, 0.22), rng.uniform(0.25, 0.5), rng.uniform(-0.15, 0.15)
    n = int(length * sample_rate)
    samples = array("h")
    phase = rng.uniform(0.0, 2 * math.pi)
    for i in range(n):
        position = i / n
        phase += 2 * math.pi * freq * (1.0 + glide * position) / sample_rate
        envelope = math.sin(math.pi * position) ** 2
        value = math.sin(phase) + 0.5 * math.sin(2 * phase) + 0.25 * math.sin(3 * phase)
        samples.append(int(32767 * amplitude * envelope * value / 1.75))
    return samples
