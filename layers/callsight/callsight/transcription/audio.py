"""Make a recording on disk uploadable to an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint.

The endpoint takes files of at most 25 MB and, depending on the model, a limited length of audio.
:func:`prepare_parts` works from a file and writes its parts as files, never holding a recording in
memory (a worker's memory does not grow with the recording):

- within both limits, the recording itself is uploaded, under its own name (its tags survive);
- a PCM WAV is cut in pure Python into the fewest equal-ish parts on frame boundaries (exact offsets),
  streamed from disk in blocks, each part keeping the source's ``fmt`` and ``LIST``/``INFO`` chunks;
- an MP3 is cut without re-encoding (ffmpeg's segment muxer, ``-c copy``: fast and lossless);
- anything else (OGG/Opus, M4A/AAC, WebM, FLAC, WAVs that are not PCM), and an MP3 whose copied parts
  would not fit, is re-encoded to mono 16 kHz 32 kbps MP3 segments.

Split parts are named ``{stem}-part{NN}-at{offset_ms}ms.{ext}`` (NN from 01, the part's start in the whole
recording in integer milliseconds) and keep the recording's tags (ffmpeg's global metadata, plus the audio
stream's, where OGG and WebM keep theirs; a WAV part gets the source's ``LIST`` chunk).
The only ffmpeg used is the packaged one (:func:`callsight.transcription.ffmpeg.ffmpeg_path`), run without
a shell, with a timeout and its messages written to a file of which only a bounded tail is read.
:func:`join_transcripts` puts the per-part transcription results back together on one time line.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final

from callsight.transcription.ffmpeg import FfmpegMissing, ffmpeg_path

MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024
#: Extensions the transcription endpoint accepts.
UPLOAD_FORMATS: Final = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})

#: What ffmpeg re-encodes to: telephone speech loses nothing at mono 16 kHz, 32 kbps (4 000 bytes a second).
FFMPEG_BITRATE_BPS: Final = 32_000
FFMPEG_SAMPLE_RATE: Final = 16_000
#: one ffmpeg run (a re-encode of a several-hour recording takes well under a minute a hour)
FFMPEG_TIMEOUT_SECONDS: Final = 600.0
_PROBE_TIMEOUT_SECONDS: Final = 120.0
#: how much of ffmpeg's messages is read back (its log file is on disk; tags can make the header long)
_LOG_READ_BYTES: Final = 1024 * 1024
_SEGMENT_TIME_MARGIN: Final = 0.97  # ffmpeg cuts at the first packet after the segment time: stay under the limit
_SEGMENT_BYTES_MARGIN: Final = 0.9  # container overhead and bit-rate jitter
_SEGMENT_SLACK_SECONDS: Final = 0.5
_COPY_BLOCK_BYTES: Final = 1024 * 1024
_MAX_INFO_CHUNK_BYTES: Final = 1024 * 1024

_DURATION_RE: Final = re.compile(r"Duration:\s*(?:(\d+):(\d{2}):(\d{2}(?:\.\d+)?)|N/A)(?:.*?bitrate:\s*(\d+)\s*kb/s)?")
_INPUT_RE: Final = re.compile(r"Input #0, ([\w,]+), from")
_AUDIO_RE: Final = re.compile(r"Stream #0:\d+.*?: Audio: (\w+)")
_OUT_TIME_RE: Final = re.compile(r"out_time_us=(\d+)")


class UnusableAudio(ValueError):
    """The recording cannot be made uploadable: unreadable audio, ffmpeg failing or missing. The message says why."""


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One file to upload: where it is, the name to upload it under (its extension tells the format), and its
    place in the whole recording (``duration_seconds`` ``None``: unknown)."""

    path: Path
    filename: str
    offset_seconds: float
    duration_seconds: float | None

    @property
    def size(self) -> int:
        return self.path.stat().st_size


# ------------------------------------------------------------------------------------ public API


def part_filename(stem: str, index: int, offset_seconds: float, extension: str) -> str:
    """The upload name of the ``index``-th (from 1) part: ``call-77-part02-at1372400ms.mp3``."""
    return f"{stem}-part{index:02d}-at{round(offset_seconds * 1000)}ms.{extension}"


def prepare_parts(
    source: Path,
    workdir: Path,
    *,
    filename: str,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_seconds: float | None = None,
    ffmpeg: str | None = None,
) -> list[AudioPart]:
    """The recording at ``source`` as one or more files, each within ``max_bytes`` and ``max_seconds`` (``None``: no
    limit of length); parts are written into ``workdir``, which the caller removes. ``filename`` is the
    recording's name (its stem names the parts). ``ffmpeg``: the binary (default: the packaged one).

    Raises :class:`UnusableAudio` when the audio cannot be read or made to fit, :class:`ValueError` for limits
    too small to hold any audio.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    size = source.stat().st_size
    if size == 0:
        raise UnusableAudio("the recording is empty (0 bytes)")
    stem = _stem(filename)
    extension = PurePosixPath(filename).suffix.lower().lstrip(".")
    job = _Job(source, workdir, stem, max_bytes, max_seconds)
    layout = _pcm_wav(source)
    if layout is not None:
        duration = layout.duration
        if _fits(size, duration, max_bytes, max_seconds):
            return [AudioPart(source, f"{stem}.wav" if extension != "wav" else filename, 0.0, duration)]
        return _split_wav(job, layout)
    executable = ffmpeg or _packaged_ffmpeg()
    probe = _probe(executable, source, workdir)
    if _fits(size, probe.duration, max_bytes, max_seconds) and extension in UPLOAD_FORMATS:
        return [AudioPart(source, filename, 0.0, probe.duration)]
    if probe.container == "mp3" and probe.codec == "mp3" and probe.duration:
        parts = _copy_mp3(executable, job, size / probe.duration, probe.duration)
        if parts is not None:
            return parts
    return _reencode(executable, job, probe.duration)


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


@dataclass(frozen=True, slots=True)
class _Job:
    """One recording to cut: where it is, where its parts go, their name's stem, the limits."""

    source: Path
    workdir: Path
    stem: str
    max_bytes: int
    max_seconds: float | None


# ------------------------------------------------------------------------------------------- WAV


@dataclass(frozen=True, slots=True)
class _WavLayout:
    """Where a PCM WAV's pieces are in its file."""

    fmt: bytes  #: the ``fmt`` chunk's payload, copied into each part
    info: bytes | None  #: the ``LIST``/``INFO`` chunk's payload (tags), copied into each part
    data_offset: int
    frame_size: int
    rate: int
    frames: int  #: frames present (a file cut short has fewer than its header says)

    @property
    def duration(self) -> float:
        return self.frames / self.rate


def _pcm_wav(source: Path) -> _WavLayout | None:
    """The layout of a PCM WAV that :mod:`wave` reads, or ``None`` (not a WAV, not PCM, malformed)."""
    with source.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        handle.seek(0)
        try:
            with wave.open(handle, "rb") as reader:  # reads the header only
                channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
        except (wave.Error, EOFError, ValueError):
            return None
        if channels < 1 or width < 1 or rate < 1:
            return None
        return _walk_riff(handle, source.stat().st_size, channels * width, rate)


def _walk_riff(handle: BinaryIO, file_size: int, frame_size: int, rate: int) -> _WavLayout | None:
    fmt: bytes | None = None
    info: bytes | None = None
    data: tuple[int, int] | None = None
    offset = 12
    while offset + 8 <= file_size:
        handle.seek(offset)
        header = handle.read(8)
        chunk_id, size = header[:4], int.from_bytes(header[4:8], "little")
        payload = offset + 8
        if chunk_id == b"fmt " and fmt is None and size <= 1024:
            fmt = handle.read(size)
        elif chunk_id == b"LIST" and info is None and 4 <= size <= _MAX_INFO_CHUNK_BYTES:
            body = handle.read(size)
            if body[:4] == b"INFO" and len(body) == size:
                info = body
        elif chunk_id == b"data" and data is None:
            remaining = file_size - payload
            present = remaining if size in (0, 0xFFFFFFFF) else min(size, remaining)  # streamed or cut short
            data = (payload, present)
        offset = payload + size + (size % 2)
    if fmt is None or data is None:
        return None
    return _WavLayout(fmt=fmt, info=info, data_offset=data[0], frame_size=frame_size, rate=rate,
                      frames=data[1] // frame_size)


def _chunk(chunk_id: bytes, payload_size: int) -> bytes:
    return chunk_id + payload_size.to_bytes(4, "little")


def _wav_header(layout: _WavLayout, data_bytes: int) -> bytes:
    fmt = _chunk(b"fmt ", len(layout.fmt)) + layout.fmt + b"\0" * (len(layout.fmt) % 2)
    info = b"" if layout.info is None else _chunk(b"LIST", len(layout.info)) + layout.info + b"\0" * (
        len(layout.info) % 2)
    riff_size = 4 + len(fmt) + len(info) + 8 + data_bytes + data_bytes % 2
    return _chunk(b"RIFF", riff_size) + b"WAVE" + fmt + info + _chunk(b"data", data_bytes)


def _split_wav(job: _Job, layout: _WavLayout) -> list[AudioPart]:
    """The fewest equal-ish WAV parts, each within both limits (lengths differ by at most one frame)."""
    max_bytes, max_seconds, stem = job.max_bytes, job.max_seconds, job.stem
    header = len(_wav_header(layout, 0))
    cap = (max_bytes - header - 1) // layout.frame_size  # - 1: room for a pad byte
    if max_seconds is not None:
        cap = min(cap, int(max_seconds * layout.rate))
    if cap < 1:
        raise ValueError(
            f"limits of {max_bytes} bytes and {max_seconds} s cannot hold a single frame of this WAV "
            f"({layout.frame_size} bytes, 1/{layout.rate} s, {header} bytes of header)"
        )
    count = max(1, math.ceil(layout.frames / cap))
    base, extra = divmod(layout.frames, count)
    parts: list[AudioPart] = []
    start = 0
    with job.source.open("rb") as reader:
        for index in range(count):
            length = base + (1 if index < extra else 0)
            offset = start / layout.rate
            name = part_filename(stem, index + 1, offset, "wav")
            path = job.workdir / name
            data_bytes = length * layout.frame_size
            reader.seek(layout.data_offset + start * layout.frame_size)
            with path.open("wb") as writer:
                writer.write(_wav_header(layout, data_bytes))
                _copy(reader, writer, data_bytes)
                if data_bytes % 2:
                    writer.write(b"\0")
            parts.append(AudioPart(path, name, offset, length / layout.rate))
            start += length
    return parts


def _copy(reader: BinaryIO, writer: BinaryIO, count: int) -> None:
    while count > 0:
        block = reader.read(min(_COPY_BLOCK_BYTES, count))
        if not block:
            raise UnusableAudio("the WAV recording ended before its audio did")
        writer.write(block)
        count -= len(block)


# ---------------------------------------------------------------------------------------- ffmpeg


@dataclass(frozen=True, slots=True)
class _Probe:
    container: str | None  #: ffmpeg's demuxer ("mp3", "ogg", "wav", "mov,mp4,m4a,3gp,3g2,mj2", ...)
    codec: str | None  #: of the first audio stream ("mp3", "opus", "aac", "pcm_alaw", ...)
    duration: float | None


def _packaged_ffmpeg() -> str:
    try:
        return ffmpeg_path()
    except FfmpegMissing as exc:
        raise UnusableAudio(f"cannot decode the recording: {exc} (deployment error: the transcription function "
                            "needs the FfmpegLayer, layers/ffmpeg)") from None


def _probe(ffmpeg: str, source: Path, workdir: Path) -> _Probe:
    """What ffmpeg reads from the header; when it gives no length, or only one estimated from the bit rate (an MP3
    without a Xing header, a browser's WebM), the length of the audio decoded to nothing."""
    log = _run(ffmpeg, ["-i", str(source)], workdir, "probe", _PROBE_TIMEOUT_SECONDS, check=False)
    audio = _AUDIO_RE.search(log)
    if audio is None:
        raise UnusableAudio(f"ffmpeg finds no audio in the recording: {_last_line(log)}")
    container = _INPUT_RE.search(log)
    duration: float | None = None
    match = _DURATION_RE.search(log)
    if match is not None and match.group(1) is not None:
        hours, minutes, seconds = match.group(1), match.group(2), match.group(3)
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if duration is None or duration <= 0 or "Estimating duration from bitrate" in log:
        duration = _decoded_duration(ffmpeg, source, workdir)
    return _Probe(container.group(1) if container else None, audio.group(1), duration)


def _decoded_duration(ffmpeg: str, source: Path, workdir: Path) -> float | None:
    progress = workdir / "ffmpeg-progress.txt"
    _run(ffmpeg, ["-nostats", "-i", str(source), "-map", "0:a:0", "-progress", str(progress), "-stats_period", "30",
                  "-f", "null", "-"], workdir, "decode", _PROBE_TIMEOUT_SECONDS)
    times = _OUT_TIME_RE.findall(_tail(progress))
    progress.unlink(missing_ok=True)
    return int(times[-1]) / 1_000_000 if times and int(times[-1]) > 0 else None


def _segment_time(duration: float | None, bytes_per_second: float, max_bytes: int, max_seconds: float | None) -> float:
    """Equal-ish segments (not full ones and a short rest) within both limits, with margins."""
    segment = max_bytes * _SEGMENT_BYTES_MARGIN / bytes_per_second
    if max_seconds is not None:
        segment = min(segment, max_seconds * _SEGMENT_TIME_MARGIN)
    if duration is not None and duration > 0:  # + slack: decoders may find a little more audio than the header says
        segment = min(segment, duration / math.ceil(duration / segment) + _SEGMENT_SLACK_SECONDS)
    return segment


def _copy_mp3(ffmpeg: str, job: _Job, bytes_per_second: float, duration: float) -> list[AudioPart] | None:
    """MP3 parts cut without re-encoding; ``None`` when they would not fit (then the caller re-encodes)."""
    segment = _segment_time(duration, bytes_per_second, job.max_bytes, job.max_seconds)
    parts = _segments(ffmpeg, job, "copy", ["-c", "copy"], segment)
    if all(_part_fits(part, job.max_bytes, job.max_seconds) for part in parts):
        return parts
    for part in parts:
        part.path.unlink(missing_ok=True)
    return None


def _reencode(ffmpeg: str, job: _Job, duration: float | None) -> list[AudioPart]:
    max_bytes, max_seconds = job.max_bytes, job.max_seconds
    segment = _segment_time(duration, FFMPEG_BITRATE_BPS / 8, max_bytes, max_seconds)
    codec = ["-ac", "1", "-ar", str(FFMPEG_SAMPLE_RATE), "-c:a", "libmp3lame", "-b:a", f"{FFMPEG_BITRATE_BPS // 1000}k"]
    parts = _segments(ffmpeg, job, "encode", codec, segment)
    for part in parts:
        if not _part_fits(part, max_bytes, max_seconds):
            raise UnusableAudio(
                f"re-encoded part {part.filename} is {_size(part.size)} and {part.duration_seconds or 0:.1f} s, "
                f"over the {_size(max_bytes)} or {max_seconds} s limit"
            )
    return parts


def _segments(ffmpeg: str, job: _Job, kind: str, codec: list[str], segment_time: float) -> list[AudioPart]:
    """ffmpeg's segment muxer into MP3 parts, named by the contract, with offsets from its segment list."""
    source, workdir, stem = job.source, job.workdir, job.stem
    folder = workdir / f"{kind}-parts"
    folder.mkdir()
    listing = folder / "parts.csv"
    _run(ffmpeg, [
        "-i", str(source), "-map", "0:a:0",
        # the recording's tags in each part: the global ones (ffmpeg's default) and the audio stream's (OGG, WebM)
        "-map_metadata:g", "0:g", "-map_metadata:g", "0:s:a:0",
        *codec,
        "-f", "segment", "-segment_format", "mp3", "-segment_time", f"{segment_time:.3f}", "-reset_timestamps", "1",
        "-segment_list", str(listing), "-segment_list_type", "csv", str(folder / "part%04d.mp3"),
    ], workdir, kind, FFMPEG_TIMEOUT_SECONDS)
    rows: list[tuple[Path, float, float]] = []
    if listing.is_file():
        with listing.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) >= 3 and (folder / Path(row[0]).name).is_file():
                    rows.append((folder / Path(row[0]).name, float(row[1]), float(row[2])))
    if not rows:
        raise UnusableAudio(f"ffmpeg produced no audio when cutting the recording ({kind})")
    parts: list[AudioPart] = []
    for index, (path, start, end) in enumerate(rows, start=1):
        name = part_filename(stem, index, start, "mp3") if len(rows) > 1 else f"{stem}.mp3"
        target = workdir / name
        path.rename(target)
        parts.append(AudioPart(target, name, start, max(0.0, end - start)))
    listing.unlink(missing_ok=True)
    folder.rmdir()
    return parts


def _run(ffmpeg: str, arguments: list[str], workdir: Path, name: str, timeout: float, *, check: bool = True) -> str:
    """Run ffmpeg (no shell, no stdin, messages to a file); its messages (at most :data:`_LOG_READ_BYTES`).
    With ``check``, a failure or a timeout is an :class:`UnusableAudio` naming ffmpeg's last message."""
    log = workdir / f"ffmpeg-{name}.log"
    command = [ffmpeg, "-nostdin", "-hide_banner", "-y", *arguments]
    if check:
        command[4:4] = ["-loglevel", "error"]
    try:
        with log.open("wb") as errors:
            completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, check=False,
                timeout=timeout,
            )
    except subprocess.TimeoutExpired:
        raise UnusableAudio(f"ffmpeg timed out after {timeout:g} s ({name})") from None
    except OSError as error:
        raise UnusableAudio(f"cannot run ffmpeg ({name}): {error.strerror or error}") from None
    text = _tail(log)
    log.unlink(missing_ok=True)
    if check and completed.returncode != 0:
        raise UnusableAudio(f"ffmpeg could not read the recording ({name}): {_last_line(text)}")
    return text


def _tail(path: Path) -> str:
    """The file's first :data:`_LOG_READ_BYTES` bytes if it is small, else its last ones (bounded either way)."""
    if not path.is_file():
        return ""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size > _LOG_READ_BYTES:
            handle.seek(size - _LOG_READ_BYTES)
        return handle.read(_LOG_READ_BYTES).decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


# --------------------------------------------------------------------------------------- helpers


def _fits(size: int, duration: float | None, max_bytes: int, max_seconds: float | None) -> bool:
    too_long = duration is not None and max_seconds is not None and duration > max_seconds
    return size <= max_bytes and not too_long


def _part_fits(part: AudioPart, max_bytes: int, max_seconds: float | None) -> bool:
    return _fits(part.size, part.duration_seconds, max_bytes, max_seconds)


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
