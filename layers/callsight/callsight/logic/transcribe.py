"""Transcription: a call's recording from S3 to a transcript in S3, each line labelled by speaker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import openai
from openai import OpenAI

from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore, transcript_key
from callsight.dates import utc_now_iso
from callsight.errors import CallFailed
from callsight.transcription.audio import AudioTooLarge, join_transcripts, prepare_parts
from callsight.transcription.speakers import label_speakers, labelled_lines

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")


@dataclass(frozen=True)
class TranscriptionSettings:
    model: str
    language: str
    prompt: str
    response_format: str
    max_upload_bytes: int
    max_audio_seconds: float



class Transcriber:
    def __init__(self, *, calls: CallRepository, store: ObjectStore, client: OpenAI,
                 settings: TranscriptionSettings) -> None:
        self.calls = calls
        self.store = store
        self.client = client
        self.settings = settings

    def transcribe(self, key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        """Transcribe one call (its stored item); returns the attributes to store on it. CallFailed says why not."""
        if not call.get("recording_key"):
            raise CallFailed("no recording in storage for this call: sync it first")
        audio = self.store.get_bytes(call["recording_key"])
        filename = call["recording_key"].rsplit("/", 1)[-1]
        try:
            parts = prepare_parts(audio, filename=filename, max_bytes=self.settings.max_upload_bytes,
                                  max_seconds=self.settings.max_audio_seconds)
        except AudioTooLarge as exc:
            raise CallFailed(f"transcription impossible: {exc}") from None
        results = [(part, self._transcribe_part(part.data, part.filename)) for part in parts]
        joined = join_transcripts(results)
        timed = [s for s in joined.get("segments") or [] if str(s.get("text", "")).strip()]
        segments = [str(s["text"]).strip() for s in timed]
        # without timed segments, sentences: one speaker often says several in a row, so switching is cheaper
        texts = segments or [t for t in _SENTENCE.split(str(joined.get("text", "")).strip()) if t]
        if not texts:
            raise CallFailed("the transcription came back empty (silence or no speech)")
        labels = label_speakers(texts, direction=call.get("direction", "incoming"),
                                same_speaker_penalty=2.5 if segments else 0.5)
        lines: list[dict[str, Any]] = list(labelled_lines(texts, labels))
        if segments:  # each line is a segment: its times (shifted to the whole recording) go with it
            for line, segment in zip(lines, timed, strict=True):
                line.update({k: float(segment[k]) for k in ("start", "end") if isinstance(segment.get(k), int | float)})
        transcript = {"call_id": call["call_id"], "model": self.settings.model, "language": self.settings.language,
                      "text": joined.get("text", ""), "segments": joined.get("segments") or [], "lines": lines,
                      "parts": len(parts)}
        stored_at = transcript_key(self.calls.client_id, key.day, key.call_id)
        self.store.put_json(stored_at, transcript)
        return {"transcript_key": stored_at, "transcript_chars": len(str(transcript["text"])),
                "transcribed_at": utc_now_iso()}

    def _transcribe_part(self, data: bytes, filename: str) -> dict[str, Any]:
        s = self.settings
        try:
            answer: Any = self.client.audio.transcriptions.create(  # type: ignore[call-overload]
                model=s.model, file=(filename, data), language=s.language, prompt=s.prompt or openai.omit,
                response_format=s.response_format,
            )
        except openai.APIStatusError as exc:
            raise CallFailed(f"transcription failed: HTTP {exc.status_code} {_message(exc)}") from None
        except openai.APIError as exc:
            raise CallFailed(f"transcription failed: {type(exc).__name__}: {_message(exc)}") from None
        if isinstance(answer, str):
            return {"text": answer}
        result: dict[str, Any] = answer.model_dump()
        return result


def _message(exc: openai.APIError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    text = error.get("message") if isinstance(error, dict) else None
    return str(text or exc.message)[:300]
