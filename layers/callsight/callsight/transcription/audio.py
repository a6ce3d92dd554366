"""Make a recording uploadable to an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint.

The endpoint takes files of at most 25 MB and, depending on the model, a limited length of audio.
:func:`prepare_parts` returns the recording unchanged when it is within both limits (so metadata
embedded in the file survives), splits a PCM WAV into the fewest equal-ish parts in pure Python
(stdlib :mod:`wave`, cuts on frame boundaries, exact offsets), and re-encodes any other format with
``ffmpeg`` when one is available (Lambda has none by default: then :class:`AudioTooLarge`).
:func:`join_transcripts` puts the per-part transcription results back together on one time line.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024
DEFAULT_MAX_SECONDS: Final = 1400.0
#: Extensions the transcription endpoint accepts.
UPLOAD_FORMATS: Final = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})

#: What ffmpeg re-encodes to: telephone speech loses nothing at mono 16 kHz, 32 kbps (4 000 bytes a second).
FFMPEG_BITRATE_BPS: Final = 32_000
FFMPEG_SAMPLE_RATE: Final = 16_000
FFMPEG_TIMEOUT_SECONDS: Final = 600.0
_PROBE_TIMEOUT_SECONDS: Final = 60.0
_SEGMENT_TIME_MARGIN: Final = 0.98  # ffmpeg cuts at the first packet after the segment time: stay under the limit
_SEGMENT_BYTES_MARGIN: Final = 0.9  # container overhead and bit-rate jitter
_DURATION_RE: Final = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


class AudioTooLarge(ValueError):
    """The recording is over an upload limit and cannot be made to fit (no ffmpeg, or ffmpeg failed)."""


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One file to upload: its bytes, a file name (the extension tells the format) and where it starts.

    ``offset_seconds`` is the part's start in the original recording; ``duration_seconds`` is ``None``
    when it is unknown (a non-WAV file that was not probed with ffmpeg).
    """

    data: bytes
    filename: str
    offset_seconds: float
    duration_seconds: float | None


# ------------------------------------------------------------------------------------ public API


def is_wav(data: bytes) -> bool:
    """Whether the bytes are a RIFF/WAVE file (by its header, whatever the file is called)."""
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def wav_duration(data: bytes) -> float | None:
    """The length of a WAV recording in seconds, or ``None`` (not a WAV, or an unreadable one).

    PCM files are read with :mod:`wave`; other encodings (A-law, mu-law, extensible, ...) from the
    ``fmt`` chunk's byte rate and the size of the ``data`` chunk.
    """
    if not is_wav(data):
        return None
    pcm = _read_pcm(data)
    if pcm is not None:
        return pcm.duration
    return _riff_duration(data)


def prepare_parts(
    data: bytes,
    *,
    filename: str,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ffmpeg: str | None = None,
) -> list[AudioPart]:
    """The recording as one or more files, each within ``max_bytes`` and ``max_seconds`` (``None``: no limit).

    - Within both limits: one part, the very same bytes (embedded metadata survives).
    - A PCM WAV (recognised by its header): split in pure Python into the fewest equal-ish parts, cut on
      frame boundaries; each part is a WAV with the original parameters (metadata chunks are not copied).
    - Anything else over a limit: re-encoded with ``ffmpeg`` (the given path, else the one on ``PATH``) to
      mono 16 kHz 32 kbps MP3, in segments if it is still too long.

    Without ffmpeg the length of a non-WAV file is unknown, so only the byte limit applies to it. Raises
    :class:`AudioTooLarge` when the recording is over a limit and cannot be made to fit, and
    :class:`ValueError` for limits too small to hold any audio.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    if is_wav(data):
        pcm = _read_pcm(data)
        if pcm is not None:
            if _fits(len(data), pcm.duration, max_bytes, max_seconds):
                return [AudioPart(data, filename, 0.0, pcm.duration)]
            return _split_wav(pcm, filename, max_bytes, max_seconds)
        duration = _riff_duration(data)  # a WAV that the wave module cannot read: only ffmpeg can split it
    else:
        duration = None
    executable = ffmpeg or shutil.which("ffmpeg")
    if executable is None:
        if _fits(len(data), duration, max_bytes, max_seconds):
            return [AudioPart(data, filename, 0.0, duration)]
        raise AudioTooLarge(
            _too_large(len(data), duration, max_bytes, max_seconds, "no ffmpeg is available to re-encode it")
        )
    return _ffmpeg_parts(
        data, filename=filename, ffmpeg=executable, max_bytes=max_bytes, max_seconds=max_seconds, duration=duration
    )


def join_transcripts(parts: Sequence[tuple[AudioPart, dict[str, Any]]]) -> dict[str, Any]:
    """One transcription result from the results of the parts, in the order of the recording.

    Texts are joined with a space; ``segments`` (and ``words``, if any) are concatenated with their
    ``start``/``end`` shifted by the part's offset and segment ``id``\\ s renumbered from 0. ``language``
    is the first part's and ``duration`` the end of the last part, when the results give them.
    """
    ordered = sorted(parts, key=lambda item: item[0].offset_seconds)
    texts: list[str] = []
    segments: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    has_segments = has_words = False
    language: str | None = None
    end: float | None = None
    for part, result in ordered:
        offset = part.offset_seconds
        text = str(result.get("text") or "").strip()
        if text:
            texts.append(text)
        if isinstance(result.get("segments"), list):
            has_segments = True
            for segment in result["segments"]:
                shifted = _shifted(segment, offset)
                shifted["id"] = len(segments)
                segments.append(shifted)
        if isinstance(result.get("words"), list):
            has_words = True
            words.extend(_shifted(word, offset) for word in result["words"])
        if language is None and isinstance(result.get("language"), str):
            language = result["language"]
        length = part.duration_seconds if part.duration_seconds is not None else result.get("duration")
        if isinstance(length, int | float) and not isinstance(length, bool):
            end = max(end or 0.0, offset + float(length))
    joined: dict[str, Any] = {"text": " ".join(texts)}
    if language is not None:
        joined["language"] = language
    if end is not None:
        joined["duration"] = end
    if has_segments:
        joined["segments"] = segments
    if has_words:
        joined["words"] = words
    return joined


# ------------------------------------------------------------------------------------------- WAV


@dataclass(frozen=True, slots=True)
class _Pcm:
    """A PCM WAV read with :mod:`wave`."""

    channels: int
    sample_width: int
    rate: int
    frames: bytes

    @property
    def frame_size(self) -> int:
        return self.channels * self.sample_width

    @property
    def frame_count(self) -> int:
        return len(self.frames) // self.frame_size

    @property
    def duration(self) -> float:
        return self.frame_count / self.rate


def _read_pcm(data: bytes) -> _Pcm | None:
    """The WAV's audio, or ``None`` when :mod:`wave` cannot read it (not PCM, malformed)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())  # fewer if the file is cut short: count what is there
    except (wave.Error, EOFError, ValueError):
        return None
    if channels < 1 or width < 1 or rate < 1:
        return None
    frame_size = channels * width
    return _Pcm(channels, width, rate, frames[: len(frames) - len(frames) % frame_size])


def _wav_bytes(pcm: _Pcm, frames: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(pcm.channels)
        writer.setsampwidth(pcm.sample_width)
        writer.setframerate(pcm.rate)
        writer.writeframes(frames)
    return buffer.getvalue()


def _split_wav(pcm: _Pcm, filename: str, max_bytes: int, max_seconds: float | None) -> list[AudioPart]:
    """The fewest equal-ish WAV parts, each within both limits (sizes differ by at most one frame)."""
    header = len(_wav_bytes(pcm, b""))
    cap = (max_bytes - header) // pcm.frame_size
    if max_seconds is not None:
        cap = min(cap, int(max_seconds * pcm.rate))
    if cap < 1:
        raise ValueError(
            f"limits of {max_bytes} bytes and {max_seconds} s cannot hold a single frame of this WAV "
            f"({pcm.frame_size} bytes, 1/{pcm.rate} s, {header} bytes of header)"
        )
    total = pcm.frame_count
    count = max(1, math.ceil(total / cap))
    base, extra = divmod(total, count)
    stem = _stem(filename)
    parts: list[AudioPart] = []
    start = 0
    for index in range(count):
        length = base + (1 if index < extra else 0)
        chunk = pcm.frames[start * pcm.frame_size : (start + length) * pcm.frame_size]
        parts.append(
            AudioPart(
                data=_wav_bytes(pcm, chunk),
                filename=f"{stem}-part{index + 1:02d}.wav",
                offset_seconds=start / pcm.rate,
                duration_seconds=length / pcm.rate,
            )
        )
        start += length
    return parts


def _riff_duration(data: bytes) -> float | None:
    """Duration from the ``fmt`` byte rate and the ``data`` chunk size (any WAV encoding)."""
    byte_rate = 0
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        payload = offset + 8
        if chunk_id == b"fmt " and size >= 12:
            byte_rate = int.from_bytes(data[payload + 8 : payload + 12], "little")
        elif chunk_id == b"data":
            available = min(size, len(data) - payload)
            return available / byte_rate if byte_rate > 0 else None
        offset = payload + size + (size % 2)
    return None


# ---------------------------------------------------------------------------------------- ffmpeg


def _ffmpeg_parts(
    data: bytes, *, filename: str, ffmpeg: str, max_bytes: int, max_seconds: float | None, duration: float | None
) -> list[AudioPart]:
    """Probe the recording's length; keep it if it fits, else re-encode it to MP3 segments that do."""
    suffix = PurePosixPath(filename).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".audio"  # ffmpeg detects the format by content anyway
    with tempfile.TemporaryDirectory(prefix="callsight-audio-") as tmp:
        folder = Path(tmp)
        source = folder / f"input{suffix}"
        source.write_bytes(data)
        if duration is None:
            duration = _probe_duration(ffmpeg, source)
        if _fits(len(data), duration, max_bytes, max_seconds):
            return [AudioPart(data, filename, 0.0, duration)]
        segment_time = max_bytes * _SEGMENT_BYTES_MARGIN * 8 / FFMPEG_BITRATE_BPS
        if max_seconds is not None:
            segment_time = min(segment_time, max_seconds * _SEGMENT_TIME_MARGIN)
        if duration is not None and duration > 0:  # equal-ish segments rather than full ones and a short rest
            segment_time = duration / math.ceil(duration / segment_time)
        listing = folder / "parts.csv"
        command = [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-map",
            "0:a:0",
            "-map_metadata",
            "-1",
            "-ac",
            "1",
            "-ar",
            str(FFMPEG_SAMPLE_RATE),
            "-c:a",
            "libmp3lame",
            "-b:a",
            f"{FFMPEG_BITRATE_BPS // 1000}k",
            "-f",
            "segment",
            "-segment_format",
            "mp3",
            "-segment_time",
            f"{segment_time:.3f}",
            "-reset_timestamps",
            "1",
            "-segment_list",
            str(listing),
            "-segment_list_type",
            "csv",
            str(folder / "part%03d.mp3"),
        ]
        failure = _run(command, FFMPEG_TIMEOUT_SECONDS)
        if failure is not None:
            raise AudioTooLarge(
                _too_large(len(data), duration, max_bytes, max_seconds, f"ffmpeg could not re-encode it: {failure}")
            )
        parts = _read_segments(folder, listing, _stem(filename))
        if not parts:
            raise AudioTooLarge(
                _too_large(len(data), duration, max_bytes, max_seconds, "ffmpeg produced no audio when re-encoding it")
            )
        oversized = [part for part in parts if len(part.data) > max_bytes]
        if oversized:
            raise AudioTooLarge(
                f"re-encoded part {oversized[0].filename} is {_size(len(oversized[0].data))}, "
                f"still over the {_size(max_bytes)} upload limit"
            )
        return parts


def _read_segments(folder: Path, listing: Path, stem: str) -> list[AudioPart]:
    """The segments named in ffmpeg's CSV list (``name,start,end``), in order."""
    if not listing.is_file():
        return []
    with listing.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if len(row) >= 3]
    parts: list[AudioPart] = []
    for index, (name, start, end, *_rest) in enumerate(rows):
        path = folder / Path(name).name
        if not path.is_file():
            continue
        suffix = f"-part{index + 1:02d}" if len(rows) > 1 else ""
        begin = float(start)
        parts.append(AudioPart(path.read_bytes(), f"{stem}{suffix}.mp3", begin, max(0.0, float(end) - begin)))
    return parts


def _probe_duration(ffmpeg: str, source: Path) -> float | None:
    """The length ffmpeg reads from the container header (``Duration: HH:MM:SS.ss``), or ``None``."""
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [ffmpeg, "-nostdin", "-hide_banner", "-i", str(source)],
            capture_output=True,
            check=False,
            timeout=_PROBE_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _DURATION_RE.search(completed.stderr.decode("utf-8", "replace"))
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _run(command: list[str], timeout: float) -> str | None:
    """Run ffmpeg; ``None`` on success, else a short reason (the last line of its error output)."""
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g} s"
    except OSError as error:
        return f"cannot run {command[0]}: {error}"
    if completed.returncode == 0:
        return None
    lines = completed.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {completed.returncode}"


# --------------------------------------------------------------------------------------- helpers


def _fits(size: int, duration: float | None, max_bytes: int, max_seconds: float | None) -> bool:
    too_long = duration is not None and max_seconds is not None and duration > max_seconds
    return size <= max_bytes and not too_long


def _too_large(size: int, duration: float | None, max_bytes: int, max_seconds: float | None, reason: str) -> str:
    """E.g. "recording is 31.2 MB, over the 25 MB upload limit, and no ffmpeg is available to re-encode it"."""
    problems: list[str] = []
    if size > max_bytes:
        problems.append(f"{_size(size)}, over the {_size(max_bytes)} upload limit")
    if duration is not None and max_seconds is not None and duration > max_seconds:
        problems.append(f"{duration:.1f} s long, over the {max_seconds:g} s limit")
    return f"recording is {' and '.join(problems) or 'too large'}, and {reason}"


def _size(count: int) -> str:
    """A byte count for people: "31.2 MB", "25 MB", "12.5 KB", "900 bytes"."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def _stem(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).stem or "recording"


def _shifted(item: Any, offset: float) -> dict[str, Any]:
    """A copy of a segment or word with ``start``/``end`` moved by ``offset`` seconds."""
    shifted: dict[str, Any] = dict(item) if isinstance(item, dict) else {"text": str(item)}
    for key in ("start", "end"):
        value = shifted.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            shifted[key] = value + offset
    return shifted
