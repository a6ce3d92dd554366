"""Transcription: a call's recording from S3 to a transcript in S3, each line labelled by speaker.

The recording is streamed to a temporary directory (``/tmp`` on Lambda, its ephemeral storage), split there
into uploadable parts (:mod:`callsight.transcription.audio`), and the parts are transcribed at once by a
small pool of the call's own, each uploaded from its file (the SDK streams a file object: nothing is read
whole), then joined with their times shifted. The directory is always removed. Every request goes through
:func:`callsight.llm.with_retries`; one part failing after its retries fails the call with that part's reason.
"""

from __future__ import annotations

import json
import mimetypes
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import openai
from openai import OpenAI

from callsight.dal.calls import CallKey, CallRepository
from callsight.dal.recordings import ObjectStore, transcript_key
from callsight.dates import utc_now_iso
from callsight.errors import CallFailed
from callsight.llm import RetryPolicy, with_retries
from callsight.transcription.audio import AudioPart, UnusableAudio, join_transcripts, prepare_parts
from callsight.transcription.models import GPT4O_MAX_SECONDS, request_parameters, transcription_model
from callsight.transcription.speakers import label_speakers, labelled_lines

#: the temporary directories of calls being transcribed: ``/tmp/callsight-transcribe-XXXX``
WORKDIR_PREFIX = "callsight-transcribe-"
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")
_SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


@dataclass(frozen=True)
class TranscriptionSettings:
    model: str
    language: str
    prompt: str
    response_format: str
    max_upload_bytes: int
    #: a cap on each part's length for every model; ``None``: the model's own limit (models.py)
    max_audio_seconds: float | None
    #: the clinic vocabulary: ``keywords`` for gpt-transcribe, else the prompt when none is configured
    keywords: tuple[str, ...] = ()
    #: parts of one call transcribed at once
    part_concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: where recordings and their parts are written (``None``: the system's temporary directory, /tmp on Lambda)
    workdir: str | None = None


@dataclass(frozen=True)
class _Request:
    """One call's settings after the clinic's overrides: the model's name, its capabilities and the parameters."""

    model: str
    language: str
    max_seconds: float | None
    parameters: dict[str, Any]


class Transcriber:
    def __init__(self, *, calls: CallRepository, store: ObjectStore, client: OpenAI,
                 settings: TranscriptionSettings, clinic_settings: Mapping[str, Any] | None = None) -> None:
        """``clinic_settings``: the clinic profile's ``transcription`` overrides (``model``, ``language``,
        ``prompt``, ``keywords``: a list or a comma-separated string)."""
        self.calls = calls
        self.store = store
        self.client = client
        self.settings = settings
        self.request = _request(settings, clinic_settings or {})

    def transcribe(self, key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        """Transcribe one call (its stored item); returns the attributes to store on it. CallFailed says why not."""
        if not call.get("recording_key"):
            raise CallFailed("no recording in storage for this call: sync it first")
        recording = str(call["recording_key"])
        filename = PurePosixPath(recording).name
        with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=self.settings.workdir) as folder:
            workdir = Path(folder)
            suffix = PurePosixPath(filename).suffix.lower()
            source = workdir / f"recording{suffix if _SAFE_SUFFIX.fullmatch(suffix) else '.audio'}"
            self.store.download_to(recording, source)
            try:
                parts = prepare_parts(source, workdir, filename=filename, max_bytes=self.settings.max_upload_bytes,
                                      max_seconds=self.request.max_seconds)
            except UnusableAudio as exc:
                raise CallFailed(f"transcription impossible: {exc}") from None
            results = self._transcribe_parts(parts)
        joined = join_transcripts(list(zip(parts, results, strict=True)))
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
        duration = joined.get("duration")
        transcript = {"call_id": call["call_id"], "model": self.request.model, "language": self.request.language,
                      "text": joined.get("text", ""), "segments": joined.get("segments") or [], "lines": lines,
                      "duration": duration, "parts": len(parts),
                      "part_list": [{"filename": p.filename, "offset": p.offset_seconds, "duration": p.duration_seconds}
                                    for p in parts]}
        stored_at = transcript_key(self.calls.client_id, key.day, key.call_id)
        self.store.put_json(stored_at, transcript)
        return {"transcript_key": stored_at, "transcript_chars": len(str(transcript["text"])),
                "transcribed_at": utc_now_iso()}

    def _transcribe_parts(self, parts: Sequence[AudioPart]) -> list[dict[str, Any]]:
        """Each part's result, in order; the parts are sent at once (at most ``part_concurrency``). The first part
        to fail fails the call: the parts not started are cancelled."""
        if len(parts) == 1:
            return [self._transcribe_part(parts[0])]
        with ThreadPoolExecutor(max_workers=min(self.settings.part_concurrency, len(parts)),
                                thread_name_prefix="transcribe-part") as pool:
            futures: list[Future[dict[str, Any]]] = [pool.submit(self._transcribe_part, part) for part in parts]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((future for future in futures if future in done and future.exception() is not None), None)
            if failed is not None:
                for future in futures:
                    future.cancel()
                raise failed.exception() or CallFailed("a part of the recording failed")
            return [future.result() for future in futures]

    def _transcribe_part(self, part: AudioPart) -> dict[str, Any]:
        content_type = mimetypes.guess_type(part.filename)[0] or "application/octet-stream"
        try:
            with part.path.open("rb") as handle:  # the SDK passes the open file to httpx, which streams it
                answer: Any = with_retries(
                    lambda: self.client.audio.transcriptions.create(  # type: ignore[call-overload]
                        file=(part.filename, handle, content_type), **self.request.parameters),
                    policy=self.settings.retry, what=f"transcription of {part.filename}")
        except openai.APIStatusError as exc:
            raise CallFailed(f"transcription of {part.filename} failed: HTTP {exc.status_code} {_message(exc)}") \
                from None
        except openai.APIError as exc:
            raise CallFailed(f"transcription of {part.filename} failed: {type(exc).__name__}: {_message(exc)}") \
                from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CallFailed(f"transcription of {part.filename} failed: the answer was not valid JSON "
                             f"{self.settings.retry.attempts} times") from None
        if isinstance(answer, str):
            return {"text": answer}
        result: dict[str, Any] = answer.model_dump()
        return result


def remove_leftover_workdirs(root: str | None = None) -> int:
    """Removes the call directories a worker stopped mid-call (timeout, out of memory) left in ``root`` (the temporary
    directory): a Lambda sandbox keeps its /tmp across invocations and runs one at a time, so at start-up none is in
    use (the local platform gives each container its own TMPDIR, as well). Returns how many were removed."""
    removed = 0
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _request(settings: TranscriptionSettings, clinic: Mapping[str, Any]) -> _Request:
    """The model and parameters for a clinic: its overrides over the function's settings."""
    name = str(clinic.get("model") or settings.model)
    model = transcription_model(name, default_max_seconds=settings.max_audio_seconds or GPT4O_MAX_SECONDS)
    limits = [limit for limit in (model.max_seconds, settings.max_audio_seconds) if limit is not None]
    keywords = clinic.get("keywords", settings.keywords)
    if isinstance(keywords, str):
        keywords = keywords.split(",")
    language = str(clinic.get("language") or settings.language)
    parameters = request_parameters(
        model, model_name=name, language=language,
        prompt=str(clinic.get("prompt") or settings.prompt),
        keywords=[str(word) for word in keywords or ()], response_format=settings.response_format)
    return _Request(name, language, min(limits) if limits else None, parameters)


def _message(exc: openai.APIError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    text = error.get("message") if isinstance(error, dict) else None
    return str(text or exc.message)[:300]
