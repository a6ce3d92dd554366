"""Sync step 2: one chunk's recordings, from their (untrusted) links to S3.

Each link goes through :class:`callsight.links.LinkFetcher` (public addresses only unless allowed, every
redirect checked, connected to the checked address). An answer is kept only when it is a 200 whose content
type may be audio and whose first bytes are audio (:mod:`callsight.transcription.sniff`); the stored file's
extension and content type are the sniffed format's. Bodies stream through a spooled temporary file under
a byte cap. Whatever goes wrong is that call's own error, naming the host and the problem, never the link's
path or query (signed links carry tokens).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from typing import Any, Final

import httpx

from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore, recording_key
from callsight.dates import DateRange
from callsight.errors import RecordingDownloadError
from callsight.links import LinkAnswer, LinkError, LinkFetcher
from callsight.logic.steps import ChunkWorker
from callsight.processes import Process
from callsight.transcription.sniff import FORMATS, SNIFF_BYTES, AudioFormat, sniff_audio

SYNC = Process.SYNC.value
BLOCK_BYTES: Final = 64 * 1024
SPOOL_BYTES: Final = 8 * 1024 * 1024  # larger recordings spill from memory to /tmp
#: content types a recording may be served as besides audio/*; the body's first bytes must still be audio
BINARY_CONTENT_TYPES: Final = frozenset({
    "", "application/octet-stream", "binary/octet-stream", "application/ogg", "application/mp4",
    "video/mp4", "video/webm", "video/ogg", "application/x-download", "application/force-download",
})
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_KNOWN: Final = ", ".join(f.name for f in FORMATS)


class RecordingDownloader:
    """Downloads one chunk's recordings to S3, ``concurrency`` at a time; each failure stays on its call."""

    def __init__(self, *, client_id: str, run_id: str, calls: CallRepository, store: ObjectStore,
                 links: LinkFetcher, concurrency: int, max_bytes: int, days: DateRange | None = None,
                 remaining_ms: Callable[[], int] | None = None, margin_seconds: float = 0.0) -> None:
        self.client_id = client_id
        self.store = store
        self.links = links
        self.max_bytes = max_bytes
        self.worker = ChunkWorker(process=SYNC, run_id=run_id, calls=calls, concurrency=concurrency, days=days,
                                  work=lambda key, call: self.download(key, str(call["recording_url"])),
                                  remaining_ms=remaining_ms, margin_seconds=margin_seconds)

    def run(self, entries: list[dict[str, str]]) -> dict[str, int]:
        result = self.worker.run(entries)
        return {"downloaded": result["succeeded"], "failed": result["failed"], "not_pending": result["not_pending"]}

    def download(self, key: CallKey, link: str) -> dict[str, Any]:
        """The call's recording from ``link`` into S3; the fields to set on the call. Raises
        :class:`RecordingDownloadError` with the reason."""
        try:
            with self.links.get(link) as answer:
                return self._store(key, answer)
        except LinkError as exc:
            raise _failed(str(exc)) from None

    def _store(self, key: CallKey, answer: LinkAnswer) -> dict[str, Any]:
        response, host = answer.response, answer.label
        if response.status_code != 200:
            raise _failed(f"HTTP {response.status_code} from {host}")
        declared = media_type(response.headers.get("content-type"))
        if declared is None:
            raise _failed(f"{host} answered an unreadable content type, not audio")
        if not (declared.startswith("audio/") or declared in BINARY_CONTENT_TYPES):
            raise _failed(f"{host} answered {declared}, not audio")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise _failed(f"larger than {self.max_bytes} bytes ({host})")
        try:
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buffer:
                size, head, audio = 0, b"", None
                for block in response.iter_bytes(BLOCK_BYTES):
                    size += len(block)
                    if size > self.max_bytes:
                        raise _failed(f"larger than {self.max_bytes} bytes ({host})")
                    if audio is None:  # refuse a body that is not audio before reading the rest of it
                        head += block[: SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            audio = _audio_or_fail(head, declared, host)
                    buffer.write(block)
                if size == 0:
                    raise _failed(f"empty file from {host}")
                audio = audio or _audio_or_fail(head, declared, host)
                buffer.seek(0)
                s3_key = recording_key(self.client_id, key.day, key.call_id, audio.extension)
                self.store.upload(s3_key, buffer, audio.content_type)
        except httpx.HTTPError as exc:  # the body broke off: timeout, reset, bad chunked encoding...
            raise _failed(f"{type(exc).__name__} from {host}") from None
        return {"recording_key": s3_key, "recording_bytes": size, "recording_content_type": audio.content_type}


def media_type(header: str | None) -> str | None:
    """``audio/mpeg`` from ``Audio/MPEG; charset=...``; ``""`` for none; ``None`` for one that is not a media type."""
    value = (header or "").split(";", 1)[0].strip().lower()
    return value if not value or _MEDIA_TYPE.fullmatch(value) else None


def _audio_or_fail(head: bytes, declared: str, host: str) -> AudioFormat:
    audio = sniff_audio(head)
    if audio is None:
        served = f"as {declared}" if declared else "without a content type"
        raise _failed(f"{host} answered a body that is not audio ({served}; not {_KNOWN})")
    return audio


def _failed(problem: str) -> RecordingDownloadError:
    return RecordingDownloadError(f"recording download failed: {problem}")
