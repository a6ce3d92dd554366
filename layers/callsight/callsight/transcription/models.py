"""What each transcription model takes and answers: the one place these facts live.

From the installed ``openai`` package's ``types/audio/transcription_create_params.py`` and OpenAI's
speech-to-text guide (openai 3.57, 2026-12):

- ``gpt-transcribe`` (the recommended model): ``json``; takes ``prompt``, ``keywords[]`` (domain terms) and
  ``languages[]`` (possible languages). Its length limit is not documented: the gpt-4o models' 1,400 s is
  assumed.
- ``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe`` (and dated snapshots): ``json`` only; ``language``,
  ``prompt``; audio over 1,400 s is refused with a 400.
- ``gpt-4o-transcribe-diarize``: ``json``, ``text``, ``diarized_json`` (speaker-annotated, timed segments); no
  ``prompt``; ``chunking_strategy`` is required for audio over 30 s; 1,400 s.
- ``whisper-1``: ``json``, ``text``, ``srt``, ``verbose_json`` (timed segments), ``vtt``; ``language``,
  ``prompt``; no length limit beyond the 25 MB upload.
- any other name (a self-hosted OpenAI-compatible server: faster-whisper, vLLM...): ``json``, ``language`` and
  ``prompt``, and the configured length limit.

All but ``gpt-transcribe`` have an announced shutdown date (2027-02-26). When OpenAI retires a model, set the
TranscriptionModel parameter (or a clinic's ``transcription.model``) to its replacement and, if that model
takes other parameters, add it to :data:`MODELS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: the length the gpt-4o transcribe models accept (they answer 400 over it)
GPT4O_MAX_SECONDS: Final = 1400.0


@dataclass(frozen=True, slots=True)
class TranscriptionModel:
    """What a transcription model takes and answers."""

    name: str
    #: the response formats it answers, the one to use by default first (the one giving timed segments, if any)
    response_formats: tuple[str, ...]
    #: the longest audio it accepts in one request; ``None``: only the upload's 25 MB limit
    max_seconds: float | None
    prompt: bool = True
    #: ``language`` (one ISO-639-1 code)
    language: bool = True
    #: ``keywords[]`` and ``languages[]`` instead of ``language``
    keywords: bool = False
    #: needs ``chunking_strategy`` (``auto``) for audio over 30 s
    chunking: bool = False

    def response_format(self, configured: str) -> str:
        """The configured format if the model answers it, else its default one."""
        return configured if configured in self.response_formats else self.response_formats[0]


MODELS: Final[Mapping[str, TranscriptionModel]] = {
    model.name: model
    for model in (
        TranscriptionModel("gpt-transcribe", ("json",), GPT4O_MAX_SECONDS, language=False, keywords=True),
        TranscriptionModel("gpt-4o-transcribe", ("json",), GPT4O_MAX_SECONDS),
        TranscriptionModel("gpt-4o-mini-transcribe", ("json",), GPT4O_MAX_SECONDS),
        TranscriptionModel("gpt-4o-transcribe-diarize", ("diarized_json", "json", "text"), GPT4O_MAX_SECONDS,
                           prompt=False, chunking=True),
        TranscriptionModel("whisper-1", ("verbose_json", "json", "text", "srt", "vtt"), None),
    )
}

_SNAPSHOT: Final = re.compile(r"^(?P<base>.+?)-\d{4}-\d{2}-\d{2}$")


def transcription_model(name: str, *, default_max_seconds: float) -> TranscriptionModel:
    """The model's capabilities (a dated snapshot has its base model's); an unknown model gets conservative ones:
    ``json``, ``language`` + ``prompt``, and ``default_max_seconds``."""
    known = MODELS.get(name)
    if known is None and (snapshot := _SNAPSHOT.match(name)) is not None:
        known = MODELS.get(snapshot.group("base"))
    if known is not None:
        return known
    return TranscriptionModel(name, ("json",), default_max_seconds)


def request_parameters(model: TranscriptionModel, *, model_name: str, language: str, prompt: str,
                       keywords: Sequence[str], response_format: str) -> dict[str, Any]:
    """The parameters of one request, besides the file: only what the model takes.

    ``gpt-transcribe`` gets the vocabulary as ``keywords`` and the language as ``languages``; the others
    ``language`` and a ``prompt`` (the configured one, else the vocabulary as a comma-separated list).
    """
    parameters: dict[str, Any] = {"model": model_name, "response_format": model.response_format(response_format)}
    words = [word.strip() for word in keywords if word.strip()]
    if model.keywords:
        if words:
            parameters["keywords"] = words
        if language:
            parameters["languages"] = [language]
        if prompt and model.prompt:
            parameters["prompt"] = prompt
    else:
        if language and model.language:
            parameters["language"] = language
        text = prompt or ", ".join(words)
        if text and model.prompt:
            parameters["prompt"] = text
    if model.chunking:
        parameters["chunking_strategy"] = "auto"
    return parameters
