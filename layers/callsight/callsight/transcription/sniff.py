"""What audio a recording's first bytes say it is (its magic bytes), whatever the URL or the server claim.

A recording link is untrusted: a server may answer an HTML error page, a JSON body or anything else with
a 200. Only bytes that start like one of the formats the transcription endpoint reads are kept, and the
stored file's extension and content type come from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: how many leading bytes :func:`sniff_audio` needs to tell every format apart
SNIFF_BYTES: Final = 12


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str  #: for people: "MP3"
    extension: str  #: of the stored file; one of the transcription endpoint's UPLOAD_FORMATS
    content_type: str


MP3: Final = AudioFormat("MP3", "mp3", "audio/mpeg")
WAV: Final = AudioFormat("WAV", "wav", "audio/wav")
OGG: Final = AudioFormat("OGG", "ogg", "audio/ogg")
M4A: Final = AudioFormat("M4A", "m4a", "audio/mp4")
WEBM: Final = AudioFormat("WebM", "webm", "audio/webm")
FLAC: Final = AudioFormat("FLAC", "flac", "audio/flac")
#: every format recognised, in the order :func:`sniff_audio` tries them
FORMATS: Final = (MP3, WAV, OGG, M4A, WEBM, FLAC)


def sniff_audio(head: bytes) -> AudioFormat | None:
    """The format of a file starting with ``head`` (its first :data:`SNIFF_BYTES` bytes), or ``None``."""
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return MP3
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(b"OggS"):
        return OGG
    if head[4:8] == b"ftyp":  # ISO base media (MP4/M4A): a box of type "ftyp" comes first
        return M4A
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: WebM / Matroska
        return WEBM
    if head.startswith(b"fLaC"):
        return FLAC
    return None


def _mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio frame header without ID3: 11 sync bits, then no reserved version, layer, bitrate or rate."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0b11
    # layer 0 is reserved (ADTS AAC uses it: not MP3), version 1 reserved, bitrate 15 and rate 3 invalid
    return version != 1 and layer != 0 and bitrate != 0b1111 and rate != 0b11
