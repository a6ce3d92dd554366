"""Small, real WAV recordings for demo calls (stdlib only).

Each file is 8 kHz 16-bit mono PCM: up to six seconds of deterministic speech-like tone bursts (a
higher voice for the administrator's lines, a lower one for the patient's). A RIFF ``LIST``/``INFO``
chunk carries an ``ICMT`` comment with UTF-8 JSON describing the call, including the dialogue, so a
stub transcription service can recover the "transcript" from the uploaded file alone.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import random
import struct
import sys
import wave
from array import array
from collections.abc import Sequence
from typing import Any, Final

from infra.stubs.clinic_calls import DemoCall

SAMPLE_RATE: Final = 8000
SAMPLE_WIDTH: Final = 2  # bytes: 16-bit PCM
MAX_SECONDS: Final = 6.0
MIN_SECONDS: Final = 0.5
_PITCH: Final[dict[str, float]] = {"administrator": 215.0, "patient": 128.0}


def recording_metadata(call: DemoCall) -> dict[str, Any]:
    """The JSON stored in the recording's ``ICMT`` chunk."""
    return {
        "uniq": call.uniq,
        "note_id": call.note_id,
        "note_type": call.note_type,
        "duration": call.duration,
        "call_status": call.call_status,
        "scenario": call.scenario.to_dict() if call.scenario is not None else None,
    }


def make_wav(call: DemoCall) -> bytes:
    """The call's recording: ``min(duration, 6)`` seconds (at least half a second) plus its metadata."""
    seconds = max(MIN_SECONDS, min(float(call.duration), MAX_SECONDS))
    lines = call.scenario.script if call.scenario is not None else []
    return build_wav(recording_metadata(call), seconds=seconds, lines=lines, seed=call.uniq)


def build_wav(metadata: dict[str, Any], *, seconds: float, lines: Sequence[tuple[str, str]], seed: str) -> bytes:
    samples = _synthesize(seconds, lines, seed)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(SAMPLE_WIDTH)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples)
    riff = buffer.getvalue()
    comment = json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\0"
    info = b"ICMT" + struct.pack("<I", len(comment)) + comment + (b"\0" if len(comment) % 2 else b"")
    list_chunk = b"LIST" + struct.pack("<I", 4 + len(info)) + b"INFO" + info
    body = riff[12:] + list_chunk
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


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


def _synthesize(seconds: float, lines: Sequence[tuple[str, str]], seed: str) -> bytes:
    """Deterministic speech-like bursts: voiced "syllables" of the speaker's pitch, pauses between turns."""
    rng = random.Random(hashlib.sha256(seed.encode("utf-8")).hexdigest())
    total = int(seconds * SAMPLE_RATE)
    out = array("h")
    turns = list(lines)
    turn = 0
    while len(out) < total:
        if not turns:  # no dialogue: a ring-back tone, 425 Hz one second on, one second off
            out.extend(_syllable("ring", 0))
            _silence(out, 1.0)
            continue
        speaker, text = turns[turn % len(turns)]
        turn += 1
        voice = speaker if speaker in _PITCH else "patient"
        for _ in range(max(2, min(9, len(text) // 6))):
            out.extend(_syllable(voice, rng.randrange(_BANK_SIZE)))
            _silence(out, rng.uniform(0.02, 0.07))
        _silence(out, rng.uniform(0.2, 0.45))
    del out[total:]
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


_BANK_SIZE: Final = 16


@functools.cache
def _syllable(voice: str, index: int) -> array[int]:
    """One pre-rendered burst of a bank of ``_BANK_SIZE`` per voice (pitch, length and glide vary)."""
    rng = random.Random(f"{voice}:{index}")
    if voice == "ring":
        freq, length, amplitude, glide = 425.0, 1.0, 0.25, 0.0
    else:
        freq = _PITCH[voice] * rng.uniform(0.85, 1.15)
        length, amplitude, glide = rng.uniform(0.11, 0.22), rng.uniform(0.25, 0.5), rng.uniform(-0.15, 0.15)
    n = int(length * SAMPLE_RATE)
    samples = array("h")
    phase = rng.uniform(0.0, 2 * math.pi)
    for i in range(n):
        position = i / n
        phase += 2 * math.pi * freq * (1.0 + glide * position) / SAMPLE_RATE
        envelope = math.sin(math.pi * position) ** 2
        value = math.sin(phase) + 0.5 * math.sin(2 * phase) + 0.25 * math.sin(3 * phase)
        samples.append(int(32767 * amplitude * envelope * value / 1.75))
    return samples


def _silence(out: array[int], length: float) -> None:
    out.extend(array("h", bytes(2 * int(length * SAMPLE_RATE))))
