"""A stub OpenAI: a real HTTP server speaking the part of the OpenAI API Callsight uses.

Serves ``POST /v1/audio/transcriptions`` (multipart uploads as the official ``openai`` client sends them;
a demo recording from :mod:`infra.stubs.audio`, or a split part of one, is "transcribed" to the lines of its
scenario's dialogue said in it; per-model formats, hints and duration limits as OpenAI's),
``POST /v1/chat/completions`` (plain text, ``json_object`` and strict ``json_schema`` structured outputs;
a call-analysis schema gets an analysis derived from the transcript in the messages, the recommendations
report's schemas (themes, merged themes, manager actions) answers derived from the numbered items and
figures in the prompt, any other schema a minimal valid instance) and ``GET /v1/models``. Errors use OpenAI's JSON shape
``{"error": {"message", "type", "param", "code"}}``; strict schemas and reasoning models' parameters are checked
as the real API does. Knobs inject latency (also per minute of audio) and faults (429 with ``retry-after``, 500,
a request held past the client's timeout, content that is not the JSON asked for, a dropped connection).

Run it alone::

    python -m infra.stubs.openai --port 8102 [--latency-ms 50] [--latency-ms-per-audio-minute 3000]
        [--fault-rate 0.05] [--fault-kinds 429,500,reset]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from infra.stubs.audio import metadata_of, probe_audio, read_wav_metadata
from infra.stubs.clinic_calls import ADMINISTRATORS, BOOKING_CONFIRMATION_MARKER, DEFAULT_SEED
from infra.stubs.server import Response, StubRequestHandler, StubServer, serve_until_signal

DEFAULT_API_KEY: Final = "stub-openai-key"
TRANSCRIPTION_MODELS: Final = (
    "gpt-transcribe",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-diarize",
    "whisper-1",
)
#: Chat models ``GET /v1/models`` lists by default. By default any OpenAI-style chat model name is accepted
#: (``gpt-*``, ``chatgpt-*``, ``o1``/``o3``/``o4``...); ``chat_models=[...]`` restricts to a set (dated snapshots
#: such as ``gpt-4o-mini-2024-07-18`` included) and ``chat_models=["*"]`` accepts any name (a self-hosted model).
CHAT_MODELS: Final = (
    "gpt-5.5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.4-nano",
    "gpt-5.1",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o",
    "gpt-4o-mini",
    "o4-mini",
)
#: ``reset``: the connection is closed without an answer (the client sees a connection error)
FAULT_KINDS: Final = ("429", "500", "timeout", "invalid_json", "reset")
AUDIO_FORMATS: Final = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
RESPONSE_FORMATS: Final = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
MAX_UPLOAD_BYTES: Final = 25 * 1024 * 1024  # OpenAI's 25 MB: 26,214,400 bytes per request
#: the gpt-4o transcribe models answer 400 for longer audio (measured on the real API; see the README)
GPT4O_MAX_AUDIO_SECONDS: Final = 1400.0
REQUESTS_LOG_SIZE: Final = 500


@dataclass(frozen=True, slots=True)
class TranscriptionRules:
    """What a transcription model accepts: response formats, the longest audio (``None``: only the 25 MB limit),
    whether it takes ``keywords[]``/``languages[]`` hints and a ``prompt``, and the audio length over which it
    needs a ``chunking_strategy``."""

    formats: tuple[str, ...]
    max_seconds: float | None
    hints: bool = False
    prompt: bool = True
    chunking_over: float | None = None


#: OpenAI's documented rules (SDK ``transcription_create_params.py``, the speech-to-text guide): the gpt-4o models
#: answer ``json`` only; ``verbose_json``/``srt``/``vtt`` (segments, timestamps) are whisper-1's; gpt-transcribe
#: takes hints and answers ``json`` or ``text``, and no longer audio than the gpt-4o models (undocumented: assumed
#: so that our splitter never relies on more); the diarize model refuses a prompt and needs chunking over 30 s.
TRANSCRIPTION_RULES: Final[dict[str, TranscriptionRules]] = {
    "whisper-1": TranscriptionRules(("json", "text", "srt", "verbose_json", "vtt"), None),
    "gpt-transcribe": TranscriptionRules(("json", "text"), GPT4O_MAX_AUDIO_SECONDS, hints=True),
    "gpt-4o-transcribe": TranscriptionRules(("json",), GPT4O_MAX_AUDIO_SECONDS),
    "gpt-4o-mini-transcribe": TranscriptionRules(("json",), GPT4O_MAX_AUDIO_SECONDS),
    "gpt-4o-transcribe-diarize": TranscriptionRules(
        ("json", "text", "diarized_json"), GPT4O_MAX_AUDIO_SECONDS, prompt=False, chunking_over=30.0
    ),
}
#: a model configured with ``transcription_models=[...]`` that OpenAI does not have (a self-hosted server)
_OTHER_TRANSCRIPTION_MODEL: Final = TranscriptionRules(("json", "text", "srt", "verbose_json", "vtt"), None, hints=True)
_MAX_READ: Final = 256 * 1024 * 1024  # larger requests are refused without reading them
_CREATED: Final = 1_700_000_000
_JSON: Final = "application/json"
_SNAPSHOT: Final = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")
_CHAT_NAME: Final = re.compile(r"^(?:gpt-\d|chatgpt-|o\d)")
_NOT_CHAT: Final = re.compile(r"transcribe|tts|whisper|embedding|image|dall-e|moderation|realtime|search-api|sora")
_SCHEMA_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PART_NAME: Final = re.compile(r"-part\d{2,}-at(\d+)ms\.[A-Za-z0-9]+$")
#: reasoning families: only the default temperature / top_p, ``max_completion_tokens`` instead of ``max_tokens``
_REASONING: Final = re.compile(r"^(?:o\d|gpt-5|gpt-6)(?!.*-chat)")
#: chat models older than structured outputs
_NO_JSON_SCHEMA: Final = re.compile(r"^(?:gpt-3\.5|gpt-4(?:$|-))")
_RESET: Final = "x-stub-reset"  # a response header: the handler drops the connection instead of answering
_GENERIC_TRANSCRIPTS: Final = (
    "Здравствуйте, подскажите, пожалуйста, можно записаться на приём?",
    "Да, слушаю вас. Минутку, посмотрю расписание.",
    "Хорошо, спасибо, я вам перезвоню.",
    "Алло, вы меня слышите? Плохо слышно, перезвоните, пожалуйста.",
    "Подскажите, сколько стоит консультация врача?",
    "Добрый день, клиника, слушаю вас.",
)


def transcription_rules(model: str) -> TranscriptionRules:
    """The rules of a transcription model (its dated snapshots share them)."""
    snapshot = _SNAPSHOT.match(model)
    base = snapshot.group("base") if snapshot is not None and model not in TRANSCRIPTION_RULES else model
    return TRANSCRIPTION_RULES.get(base, _OTHER_TRANSCRIPTION_MODEL)


def _json(status: int, payload: Any) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, f"{_JSON}; charset=utf-8")


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> Response:
    """OpenAI's error body."""
    return _json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


class _ApiError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad_request(message: str, param: str | None = None, code: str | None = None) -> _ApiError:
    return _ApiError(_error(400, message, "invalid_request_error", param, code))


class _Handler(StubRequestHandler):
    """Also reads chunked uploads, and drains bodies over the upload limit instead of keeping them."""

    server_version = "openai-stub"

    def read_body(self, method: str) -> tuple[bytes | None, int] | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        return super().read_body(method)

    def read_length(self, length: int) -> bytes | None:
        if length > MAX_UPLOAD_BYTES:
            self._drain(length)
            return None
        return super().read_length(length)

    def _send(self, response: Response, method: str) -> None:
        if response.headers.get(_RESET):  # the reset fault: no answer, the connection cut (RST)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        super()._send(response, method)

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_chunked(self) -> tuple[bytes | None, int]:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk_size = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                chunk_size = 0
            if chunk_size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = self.rfile.read(chunk_size)
            self.rfile.readline(8)
            size += len(data)
            if size <= MAX_UPLOAD_BYTES:
                parts.append(data)
        return (b"".join(parts) if size <= MAX_UPLOAD_BYTES else None), size


class OpenAIStub(StubServer):
    """The stub server. ``start()`` serves in a daemon thread; use as a context manager in tests.

    Point the official client at it with ``OpenAI(base_url=stub.url + "/v1", api_key=stub.api_key)``.
    """

    handler_class = _Handler
    thread_name = "openai-stub"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        transcription_models: Iterable[str] = TRANSCRIPTION_MODELS,
        chat_models: Iterable[str] | None = None,
        latency_ms: float = 0.0,
        latency_ms_per_audio_minute: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = FAULT_KINDS,
        timeout_seconds: float = 5.0,
        retry_after: float | None = None,
        seed: int = DEFAULT_SEED,
    ) -> None:
        super().__init__(host=host, port=port)
        self._lock = threading.RLock()
        self._rng = random.Random(f"openai-stub-faults:{seed}")
        self._stopping = threading.Event()
        self._counter = 0
        self._in_flight = 0
        self.api_key = DEFAULT_API_KEY
        self.transcription_models: frozenset[str] = frozenset()
        self.chat_models: frozenset[str] | None = None
        self.latency_ms = 0.0
        self.latency_ms_per_audio_minute = 0.0
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = FAULT_KINDS
        self.timeout_seconds = 5.0
        self.retry_after: float | None = None
        self.huge_answer_bytes = 0
        self.huge_answer_for = ""
        self.configure(
            api_key=api_key,
            transcription_models=transcription_models,
            chat_models=chat_models,
            latency_ms=latency_ms,
            latency_ms_per_audio_minute=latency_ms_per_audio_minute,
            fault_rate=fault_rate,
            fault_kinds=fault_kinds,
            timeout_seconds=timeout_seconds,
            retry_after=retry_after,
        )
        self.reset_stats()

    # ------------------------------------------------------------------------------- lifecycle

    def _before_start(self) -> None:
        self._stopping.clear()

    def _before_stop(self) -> None:
        self._stopping.set()  # wakes requests held by latency or the timeout fault

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``: the server's root ``url`` + ``"/v1"``."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------------------------------ HTTP

    def _serve_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, size: int
    ) -> Response:
        return self.handle(method, target, headers, body, size)

    def _refuse_length(self, length: int) -> Response | None:
        if length < 0:
            return _error(400, "Bad Content-Length")
        if length > _MAX_READ:
            return _error(413, f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded", "server_error")
        return None

    def _crash_response(self, error: Exception) -> Response:
        return _error(500, f"Stub error: {type(error).__name__}: {error}", "server_error")

    # ----------------------------------------------------------------------------------- knobs

    def configure(self, **knobs: Any) -> None:
        """Changes ``latency_ms``, ``latency_ms_per_audio_minute`` (added to a transcription per minute of its audio:
        the real service takes roughly 2,000-5,000 ms a minute), ``fault_rate``, ``fault_kinds``,
        ``timeout_seconds``, ``retry_after``, ``api_key``, ``transcription_models`` or ``chat_models`` (``None``:
        OpenAI-style names, ``["*"]``: any name) while running. ``huge_answer_bytes`` with ``huge_answer_for`` (a
        part of an upload's filename; empty: none): the JSON transcription of such an upload has that many bytes
        of repeated words added to its ``text`` (a runaway transcript: an answer that takes the client's memory)."""
        allowed = {
            "latency_ms",
            "latency_ms_per_audio_minute",
            "fault_rate",
            "fault_kinds",
            "timeout_seconds",
            "retry_after",
            "api_key",
            "transcription_models",
            "chat_models",
            "huge_answer_bytes",
            "huge_answer_for",
        }
        unknown = set(knobs) - allowed
        if unknown:
            raise TypeError(f"unknown knobs: {sorted(unknown)}")
        if "fault_rate" in knobs and not 0.0 <= float(knobs["fault_rate"]) <= 1.0:
            raise ValueError("fault_rate must be within 0..1")
        kinds: tuple[str, ...] | None = None
        if "fault_kinds" in knobs:
            raw = knobs["fault_kinds"]
            kinds = tuple(dict.fromkeys([raw] if isinstance(raw, str) else [str(kind) for kind in raw]))
            if not kinds or set(kinds) - set(FAULT_KINDS):
                raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        with self._lock:
            if "latency_ms" in knobs:
                self.latency_ms = max(0.0, float(knobs["latency_ms"]))
            if "latency_ms_per_audio_minute" in knobs:
                self.latency_ms_per_audio_minute = max(0.0, float(knobs["latency_ms_per_audio_minute"]))
            if "fault_rate" in knobs:
                self.fault_rate = float(knobs["fault_rate"])
            if kinds is not None:
                self.fault_kinds = kinds
            if "timeout_seconds" in knobs:
                self.timeout_seconds = max(0.0, float(knobs["timeout_seconds"]))
            if "retry_after" in knobs:
                value = knobs["retry_after"]
                self.retry_after = None if value is None else max(0.0, float(value))
            if "api_key" in knobs:
                self.api_key = str(knobs["api_key"])
            if "transcription_models" in knobs:
                self.transcription_models = frozenset(str(m) for m in knobs["transcription_models"])
            if "chat_models" in knobs:
                models = knobs["chat_models"]
                self.chat_models = None if models is None else frozenset(str(m) for m in models)
            if "huge_answer_bytes" in knobs:
                self.huge_answer_bytes = max(0, int(knobs["huge_answer_bytes"]))
            if "huge_answer_for" in knobs:
                self.huge_answer_for = str(knobs["huge_answer_for"])

    # ----------------------------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """``requests``: API requests received (``/v1/*``); ``by_status``: their answers; ``faults``: injected
        faults by kind; ``transcriptions`` / ``completions`` / ``analyses``: requests answered 200 (analyses:
        completions that returned a call analysis); ``models``: requests answered 200 by model;
        ``request_times``: monotonic arrival times of the requests answered 2xx; ``audio_seconds``: the
        duration transcribed; ``prompt_tokens`` / ``completion_tokens``: the usage reported (``largest_prompt_tokens``:
        the largest one request's); ``transcriptions_in_flight`` / ``max_transcriptions_in_flight``: transcription
        requests being answered now / at most at once since the last reset. :meth:`requests_log` has each request."""
        with self._lock:
            return {
                "transcriptions_in_flight": self._in_flight,
                "max_transcriptions_in_flight": self._max_in_flight,
                "requests": self._requests,
                "by_status": dict(self._by_status),
                "faults": dict(self._faults),
                "transcriptions": self._transcriptions,
                "completions": self._completions,
                "analyses": self._analyses,
                "models": dict(self._models),
                "request_times": list(self._request_times),
                "audio_seconds": self._audio_seconds,
                "prompt_tokens": self._prompt_tokens,
                "largest_prompt_tokens": self._largest_prompt_tokens,
                "completion_tokens": self._completion_tokens,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_status: dict[int, int] = {}
            self._faults: dict[str, int] = {}
            self._transcriptions = 0
            self._completions = 0
            self._analyses = 0
            self._models: dict[str, int] = {}
            self._request_times: list[float] = []
            self._audio_seconds = 0.0
            self._prompt_tokens = 0
            self._largest_prompt_tokens = 0
            self._completion_tokens = 0
            self._max_in_flight = self._in_flight
            self._log: deque[dict[str, Any]] = deque(maxlen=REQUESTS_LOG_SIZE)

    def requests_log(self) -> list[dict[str, Any]]:
        """The last :data:`REQUESTS_LOG_SIZE` API requests, oldest first: ``endpoint``, ``status``, ``model`` and
        what each carried (transcriptions: ``filename``, ``bytes``, ``fields`` (``name[]`` fields as lists),
        ``audio_seconds``; completions: ``params`` (the body's keys), ``temperature``, ``response_format``)."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    # -------------------------------------------------------------------------- request handling

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, size: int) -> Response:
        """Answers one HTTP request (the server's handler threads call this). ``body`` is ``None`` when the
        request was larger than the upload limit (``size`` bytes, read and dropped)."""
        arrived = time.monotonic()
        path = target.split("?", 1)[0].rstrip("/") or "/"
        transcription = path == "/v1/audio/transcriptions"
        note: dict[str, Any] = {}
        with self._lock:
            self._requests += 1
            latency = self.latency_ms
            if transcription:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if latency > 0:
                self._stopping.wait(latency / 1000.0)
            response, endpoint = self._answer(method, path, headers, body, size, note=note)
        finally:
            if transcription:
                with self._lock:
                    self._in_flight -= 1
        response.headers.setdefault("x-request-id", f"req_{secrets.token_hex(16)}")
        response.headers.setdefault("openai-version", "2020-10-01")
        response.headers.setdefault("openai-processing-ms", str(int((time.monotonic() - arrived) * 1000)))
        with self._lock:
            if endpoint is not None and path.startswith("/v1/"):
                reset = bool(response.headers.get(_RESET))
                self._log.append({"endpoint": endpoint, "status": None if reset else response.status, **note})
            if not response.headers.get(_RESET):
                self._by_status[response.status] = self._by_status.get(response.status, 0) + 1
            if 200 <= response.status < 300:
                self._request_times.append(arrived)
                if endpoint == "transcriptions":
                    self._transcriptions += 1
                elif endpoint == "completions":
                    self._completions += 1
        return response

    def _answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None, size: int, *, note: dict[str, Any]
    ) -> tuple[Response, str | None]:
        routes = {
            "/v1/audio/transcriptions": ("POST", "transcriptions"),
            "/v1/chat/completions": ("POST", "completions"),
            "/v1/models": ("GET", "models"),
        }
        route = routes.get(path)
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", "model")
        if route is None or method not in (route[0], "HEAD" if route[0] == "GET" else route[0]):
            return _error(404, f"Invalid URL ({method} {path})"), None
        endpoint = route[1]
        if body is None:
            return _error(
                413, f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded ({size} bytes read)", "server_error"
            ), endpoint
        unauthorized = self._check_auth(headers)
        if unauthorized is not None:
            return unauthorized, endpoint
        fault = self._draw_fault()
        if fault in ("500", "timeout", "reset"):
            self._count_fault(fault)
        if fault == "reset":
            return Response(502, headers={_RESET: "1"}), endpoint
        if fault == "500":
            return _server_error(), endpoint
        if fault == "timeout":
            with self._lock:
                hold = self.timeout_seconds
            self._stopping.wait(hold)
            return _server_error(), endpoint
        try:
            if endpoint == "transcriptions":
                response, model = self._transcribe(headers, body, fault == "invalid_json", note)
            elif endpoint == "completions":
                response, model = self._complete(body, fault == "invalid_json", note)
            else:
                response, model = self._list_models(path), None
                if fault == "invalid_json":
                    response = _truncated(response)
        except _ApiError as error:
            return error.response, endpoint  # a drawn 429 or invalid_json fault does not happen to a bad request
        if fault in ("429", "invalid_json"):
            self._count_fault(fault)
        if fault == "429":  # after validation: OpenAI's limits apply to well-formed requests of a model
            return self._rate_limited(model), endpoint
        if model is not None and 200 <= response.status < 300:
            with self._lock:
                self._models[model] = self._models.get(model, 0) + 1
        return response, endpoint

    def _check_auth(self, headers: Mapping[str, str]) -> Response | None:
        value = headers.get("authorization", "")
        scheme, _, key = value.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
                "if you're accessing the API from your browser and are prompted for a username and password. You "
                "can obtain an API key from https://platform.openai.com/account/api-keys.",
            )
        with self._lock:
            expected = self.api_key
        if not secrets.compare_digest(key.encode(), expected.encode()):
            shown = f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 8 else "*" * len(key)
            return _error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate <= 0 or self._rng.random() >= self.fault_rate:
                return None
            return self._rng.choice(self.fault_kinds)

    def _count_fault(self, fault: str) -> None:
        with self._lock:
            self._faults[fault] = self._faults.get(fault, 0) + 1

    def _rate_limited(self, model: str | None) -> Response:
        with self._lock:
            wait = self.retry_after if self.retry_after is not None else round(self._rng.uniform(0.2, 1.0), 1)
        name = model or "this model"
        response = _error(
            429,
            f"Rate limit reached for {name} in organization org-callsightstub on requests per min (RPM): "
            f"Limit 500, Used 500, Requested 1. Please try again in {int(wait * 1000)}ms. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            "requests",
            code="rate_limit_exceeded",
        )
        response.headers.update(
            {
                "retry-after": f"{wait:g}",
                "retry-after-ms": str(int(wait * 1000)),
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{int(wait * 1000)}ms",
                "x-ratelimit-limit-tokens": "200000",
                "x-ratelimit-remaining-tokens": "199000",
                "x-ratelimit-reset-tokens": "300ms",
            }
        )
        return response

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            number = self._counter
        return f"{prefix}{number:06d}{secrets.token_hex(10)}"

    # ---------------------------------------------------------------------------------- models

    def _model_list(self) -> list[str]:
        with self._lock:
            chat = sorted(self.chat_models - {"*"}) if self.chat_models is not None else list(CHAT_MODELS)
            return [*sorted(self.transcription_models), *chat]

    def _list_models(self, path: str) -> Response:
        def card(name: str) -> dict[str, Any]:
            return {"id": name, "object": "model", "created": _CREATED, "owned_by": "system"}

        if path == "/v1/models":
            return _json(200, {"object": "list", "data": [card(name) for name in self._model_list()]})
        name = path[len("/v1/models/") :]
        if name in self._model_list():
            return _json(200, card(name))
        return _model_not_found(name)

    def _check_chat_model(self, model: str) -> None:
        with self._lock:
            allowed, transcription = self.chat_models, self.transcription_models
        if model in transcription or _NOT_CHAT.search(model):
            raise _ApiError(
                _error(
                    404,
                    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. Did you "
                    "mean to use v1/completions?",
                    param="model",
                    code="model_not_found",
                )
            )
        if allowed is None:
            if not _CHAT_NAME.match(_base_model(model)):
                raise _ApiError(_model_not_found(model))
            return
        snapshot = _SNAPSHOT.match(model)
        if "*" not in allowed and model not in allowed and (snapshot is None or snapshot.group("base") not in allowed):
            raise _ApiError(_model_not_found(model))

    # --------------------------------------------------------------------------- transcriptions

    def _transcribe(
        self, headers: Mapping[str, str], body: bytes, invalid_json: bool, note: dict[str, Any]
    ) -> tuple[Response, str]:
        content_type = headers.get("content-type", "")
        boundary = multipart_boundary(content_type)
        if not content_type.lower().startswith("multipart/form-data") or boundary is None:
            raise _bad_request(
                "Invalid Content-Type header (" + (content_type or "none") + "), expected multipart/form-data. "
                "(HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')"
            )
        fields, files = parse_multipart(body, boundary)
        model = fields.get("model", [""])[0].strip()
        upload = files.get("file")
        note.update(
            model=model or None,
            filename=upload[0] if upload else None,
            bytes=len(upload[1]) if upload else 0,
            fields={name: values if name.endswith("[]") else values[0] for name, values in fields.items()},
        )
        if not model:
            raise _bad_request("you must provide a model parameter", "model", "missing_required_parameter")
        if upload is None:
            raise _bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter")
        filename, data = upload
        with self._lock:
            models = self.transcription_models
            per_minute = self.latency_ms_per_audio_minute
            huge_bytes, huge_for = self.huge_answer_bytes, self.huge_answer_for
        snapshot = _SNAPSHOT.match(model)
        base = snapshot.group("base") if snapshot is not None and model not in models else model
        if base not in models:
            raise _ApiError(_model_not_found(model))
        rules = transcription_rules(base)
        response_format = fields.get("response_format", ["json"])[0].strip() or "json"
        if response_format not in RESPONSE_FORMATS:
            raise _bad_request(
                f"Invalid value: '{response_format}'. Supported values are: "
                + ", ".join(f"'{value}'" for value in RESPONSE_FORMATS)
                + ".",
                "response_format",
                "invalid_value",
            )
        if response_format not in rules.formats:
            raise _bad_request(
                f"response_format '{response_format}' is not compatible with model '{model}'. Use "
                + " or ".join(f"'{value}'" for value in rules.formats)
                + " instead.",
                "response_format",
                "unsupported_value",
            )
        for name in ("keywords", "languages"):
            if (fields.get(f"{name}[]") or fields.get(name)) and not rules.hints:
                raise _bad_request(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        if fields.get("prompt", [""])[0] and not rules.prompt:
            raise _bad_request(f"Prompting is not supported for model '{model}'.", "prompt", "unsupported_parameter")
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in AUDIO_FORMATS:
            raise _bad_request(
                f"Invalid file format. Supported formats: {list(AUDIO_FORMATS)}", "file", "invalid_value"
            )
        audio_kind = _sniff_audio(data)
        if audio_kind is None:
            raise _bad_request("Audio file might be corrupted or unsupported", "file", "invalid_value")
        heard = _hear(data, audio_kind, filename)
        note["audio_seconds"] = heard.seconds
        if rules.max_seconds is not None and heard.seconds > rules.max_seconds:
            raise _bad_request(
                f"audio duration {heard.seconds:g} seconds is longer than {rules.max_seconds:g} seconds which is the "
                "maximum for this model",
                "file",
                "invalid_value",
            )
        if (
            rules.chunking_over is not None
            and heard.seconds > rules.chunking_over
            and not fields.get("chunking_strategy", [""])[0]
        ):
            raise _bad_request(
                f"chunking_strategy is required for model '{model}' when the audio is longer than "
                f"{rules.chunking_over:g} seconds.",
                "chunking_strategy",
                "missing_required_parameter",
            )
        if per_minute > 0:  # the real service takes seconds per minute of audio
            self._stopping.wait(per_minute * heard.seconds / 60.0 / 1000.0)
        granularities = fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])
        text = "\n".join(heard.lines)
        segments = heard.segments
        seconds = math.ceil(heard.billed) if heard.billed > 0 else 0
        if base == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
        else:
            text_tokens = _tokens(text)
            audio_tokens = max(1, int(heard.billed * 10))
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": text_tokens,
                "total_tokens": audio_tokens + text_tokens,
            }
        if response_format == "json":
            result: dict[str, Any] = {"text": text, "usage": usage}
            if rules.hints:
                result["languages"] = [{"code": "ru"}] if text else []
            response = _json(200, result)
            if huge_bytes and huge_for and huge_for in filename:
                response = _with_runaway_text(result, huge_bytes)
        elif response_format == "verbose_json":
            payload: dict[str, Any] = {
                "task": "transcribe",
                "language": "russian",
                "duration": round(heard.billed, 2),
                "text": text,
                "segments": segments,
            }
            if "word" in granularities:
                payload["words"] = _words(segments)
            payload["usage"] = {"type": "duration", "seconds": seconds}
            response = _json(200, payload)
        elif response_format == "diarized_json":
            response = _json(
                200,
                {
                    "task": "transcribe",
                    "duration": round(heard.billed, 2),
                    "text": text,
                    "segments": [
                        {
                            "type": "transcript.text.segment",
                            "id": f"seg_{index:04d}",
                            "start": segment["start"],
                            "end": segment["end"],
                            "text": segment["text"],
                            "speaker": heard.speakers[index] if index < len(heard.speakers) else "A",
                        }
                        for index, segment in enumerate(segments)
                    ],
                    "usage": usage,
                },
            )
        elif response_format == "text":
            response = Response(200, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8")
        elif response_format == "srt":
            response = Response(200, _subtitles(segments, vtt=False).encode("utf-8"), "text/plain; charset=utf-8")
        else:
            response = Response(200, _subtitles(segments, vtt=True).encode("utf-8"), "text/vtt; charset=utf-8")
        with self._lock:
            self._audio_seconds += heard.billed
        if invalid_json:
            response = _truncated(response)
        return response, model

    # -------------------------------------------------------------------------- chat completions

    def _complete(self, body: bytes, invalid_json: bool, note: dict[str, Any]) -> tuple[Response, str]:
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                "JSON. If you have trouble figuring out how to fix this, please contact us through our help center "
                "at help.openai.com.)"
            ) from None
        if not isinstance(request, dict):
            raise _bad_request("The request body must be a JSON object.")
        model = request.get("model")
        raw_format = request.get("response_format")
        note.update(
            model=model if isinstance(model, str) else None,
            params=sorted(request),
            temperature=request.get("temperature"),
            response_format=raw_format.get("type") if isinstance(raw_format, dict) else None,
        )
        if not isinstance(model, str) or not model:
            raise _bad_request("you must provide a model parameter", "model", "missing_required_parameter")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_request(
                "[] is too short - 'messages'"
                if isinstance(messages, list)
                else "Missing required parameter: 'messages'.",
                "messages",
                "invalid_value" if isinstance(messages, list) else "missing_required_parameter",
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
                "function",
            ):
                raise _bad_request(
                    f"Invalid value for 'messages[{index}].role'.", f"messages[{index}].role", "invalid_value"
                )
        if request.get("stream"):
            raise _bad_request("The stub OpenAI server does not stream; use stream=false.", "stream", "invalid_value")
        self._check_chat_model(model)
        _check_sampling(model, request)
        texts = [(str(message["role"]), _message_text(message.get("content"))) for message in messages]
        response_format = request.get("response_format") or {"type": "text"}
        if not isinstance(response_format, dict):
            raise _bad_request("Invalid type for 'response_format'.", "response_format", "invalid_type")
        kind = response_format.get("type", "text")
        if kind == "json_schema" and _NO_JSON_SCHEMA.match(_base_model(model)):
            raise _bad_request(
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model. Learn "
                "more about supported models at the Structured Outputs guide: "
                "https://platform.openai.com/docs/guides/structured-outputs",
                "response_format",
            )
        analysis = False
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise _bad_request(
                    "Missing required parameter: 'response_format.json_schema.schema'.",
                    "response_format.json_schema.schema",
                    "missing_required_parameter",
                )
            name = str(spec.get("name", ""))
            if not _SCHEMA_NAME.match(name):
                raise _bad_request(
                    "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string "
                    "that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    "response_format.json_schema.name",
                    "invalid_value",
                )
            schema: dict[str, Any] = spec["schema"]
            if spec.get("strict"):
                problem = _strict_schema_problem(schema, fine_tuned=model.startswith("ft:"))
                if problem is not None:
                    raise _bad_request(
                        f"Invalid schema for response_format '{name}': {problem}", "response_format", None
                    )
            report_kind = report_schema_kind(schema)
            if report_kind is not None:
                value = conform_to_schema(answer_report_prompt(report_kind, _transcript_text(texts)), schema)
            elif is_call_analysis_schema(schema):
                analysis = True
                value = conform_to_schema(analyze_transcript(_transcript_text(texts)), schema)
            else:
                value = conform_to_schema(_generic_value(texts, schema), schema)
            content = json.dumps(value, ensure_ascii=False)
            if invalid_json:
                content = _broken_json(content, value, self._rng_choice(2))
        elif kind == "json_object":
            if not any("json" in text.lower() for _, text in texts):
                raise _bad_request(
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                    "'json_object'.",
                    "messages",
                )
            prompt = "\n".join(text for _, text in texts)
            if re.search(r"call_type|criteria|overall_score", prompt):
                analysis = True
                value = analyze_transcript(_transcript_text(texts))
            elif _asks_to_merge(prompt):
                report, merged = merge_recommendations(_recommendation_lines(texts))
                value = {"report": report, "recommendations": merged}
            else:
                value = {"text": _short_answer(texts)}
            content = json.dumps(value, ensure_ascii=False)
            if invalid_json:
                content = _broken_json(content, value, 0)
        elif kind == "text":
            prompt = "\n".join(text for _, text in texts)
            content = (
                merge_recommendations(_recommendation_lines(texts))[0]
                if _asks_to_merge(prompt)
                else (_short_answer(texts))
            )
            if invalid_json:
                content = content[: max(1, len(content) // 3)]
        else:
            raise _bad_request(
                f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
                "response_format.type",
                "invalid_value",
            )
        prompt_tokens = sum(_tokens(text) + 4 for _, text in texts) + 3
        if kind == "json_schema":
            prompt_tokens += _tokens(json.dumps(response_format.get("json_schema"), ensure_ascii=False)) // 2
        completion_tokens = _tokens(content)
        finish_reason = "stop"
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < completion_tokens:
            content = content[: limit * 3]
            completion_tokens = limit
            finish_reason = "length"
        choices_count = request.get("n") if isinstance(request.get("n"), int) else 1
        choices: list[dict[str, Any]] = [
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for index in range(max(1, min(int(choices_count or 1), 8)))
        ]
        payload = {
            "id": self._next_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens * len(choices),
                "total_tokens": prompt_tokens + completion_tokens * len(choices),
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_callsight_stub",
        }
        with self._lock:
            self._prompt_tokens += prompt_tokens
            self._largest_prompt_tokens = max(self._largest_prompt_tokens, prompt_tokens)
            self._completion_tokens += completion_tokens * len(choices)
            if analysis and not invalid_json:
                self._analyses += 1
        return _json(200, payload), model

    def _rng_choice(self, count: int) -> int:
        with self._lock:
            return self._rng.randrange(count)


def _base_model(model: str) -> str:
    """A fine-tuned model's base (``ft:gpt-4o-mini-2024-07-18:org::id`` -> ``gpt-4o-mini-2024-07-18``)."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model


def _check_sampling(model: str, request: Mapping[str, Any]) -> None:
    """Reasoning models take only the default ``temperature`` and ``top_p``, and ``max_completion_tokens``."""
    if not _REASONING.match(_base_model(model)):
        return
    for name in ("temperature", "top_p"):
        value = request.get(name)
        if value is not None and value != 1:
            raise _bad_request(
                f"Unsupported value: '{name}' does not support {json.dumps(value)} with this model. Only the default "
                "(1) value is supported.",
                name,
                "unsupported_value",
            )
    if request.get("max_tokens") is not None:
        raise _bad_request(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
            "instead.",
            "max_tokens",
            "unsupported_parameter",
        )


def _server_error() -> Response:
    return _error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
    )


def _model_not_found(model: str) -> Response:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def _with_runaway_text(result: Mapping[str, Any], extra_bytes: int) -> Response:
    """``result`` as JSON whose ``text`` goes on with ``extra_bytes`` of one word repeated (the body is built once,
    as bytes); ``result`` has other fields than ``text`` (``usage``)."""
    said = json.dumps(str(result.get("text", "")) + " ", ensure_ascii=False).encode("utf-8")[:-1]  # left open
    filler = b"uh " * (extra_bytes // 3) + b"uh"[: extra_bytes % 3]
    rest = json.dumps({k: v for k, v in result.items() if k != "text"}, ensure_ascii=False, separators=(",", ":"))
    return Response(200, b'{"text":' + said + filler + b'",' + rest.encode("utf-8")[1:], f"{_JSON}; charset=utf-8")


def _truncated(response: Response) -> Response:
    """The same answer cut short, as a connection dropped mid-body would leave it."""
    cut = response.body[: max(1, len(response.body) // 2)]
    return Response(response.status, cut, response.content_type, dict(response.headers))


def _broken_json(content: str, value: Any, variant: int) -> str:
    """What a model gone wrong returns: JSON cut short, or JSON that breaks the schema."""
    if variant == 0 or not isinstance(value, dict):
        return content[: max(1, len(content) * 2 // 3)]
    broken = dict(value)
    if "call_type" in broken:
        broken["call_type"] = "appointment"
    if "overall_score" in broken:
        broken["overall_score"] = 140
    if broken:
        broken.pop(next(iter(broken)))
    broken["note"] = "Анализ звонка выполнен."
    return json.dumps(broken, ensure_ascii=False)


def _tokens(text: str) -> int:
    """A rough token count (Russian text is about three characters a token)."""
    return max(1, math.ceil(len(text) / 3)) if text else 0


# ------------------------------------------------------------------------------------ multipart


def multipart_boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return match.group(1) if match else None


def parse_multipart(body: bytes, boundary: str) -> tuple[dict[str, list[str]], dict[str, tuple[str, bytes]]]:
    """The form's text fields (all values by name) and its files (name -> (filename, bytes))."""
    fields: dict[str, list[str]] = {}
    files: dict[str, tuple[str, bytes]] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, separator, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        content = content.removesuffix(b"\r\n")
        headers = head.decode("utf-8", "replace")
        disposition = next(
            (line for line in headers.split("\r\n") if line.lower().startswith("content-disposition:")), ""
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename is not None:
            files.setdefault(name.group(1), (filename.group(1), content))
        else:
            fields.setdefault(name.group(1), []).append(content.decode("utf-8", "replace"))
    return fields, files


# ---------------------------------------------------------------------------------------- audio


def _sniff_audio(data: bytes) -> str | None:
    """The container the bytes hold, by their magic numbers (``None``: not audio we know)."""
    if len(data) < 12:
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def wav_duration(data: bytes) -> float | None:
    """Seconds of audio in a (possibly truncated) WAV: the ``data`` bytes present over the ``fmt`` byte rate."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    byte_rate = 0
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        start = offset + 8
        if chunk_id == b"fmt " and start + 12 <= len(data):
            (byte_rate,) = struct.unpack("<I", data[start + 8 : start + 12])
        elif chunk_id == b"data":
            present = min(size, len(data) - start)
            return present / byte_rate if byte_rate > 0 else None
        offset = start + size + (size % 2)
    return None


@dataclass(frozen=True, slots=True)
class _Heard:
    """What the stub "hears" in an upload: the transcript's lines, their timed segments (seconds from the start
    of the upload), the speakers ("A"/"B"), the measured duration and the duration billed."""

    lines: list[str]
    segments: list[dict[str, Any]]
    speakers: list[str]
    seconds: float
    billed: float


def part_offset(filename: str) -> float | None:
    """Where a split part starts in the whole recording (seconds), from its name ``{stem}-partNN-at{ms}ms.{ext}``;
    ``None`` for a whole recording."""
    match = _PART_NAME.search(filename)
    return int(match.group(1)) / 1000.0 if match else None


def _hear(data: bytes, kind: str, filename: str) -> _Heard:
    if kind == "wav":
        measured, metadata = wav_duration(data), read_wav_metadata(data)
    else:
        probe = probe_audio(data, kind)
        measured, metadata = probe.seconds, metadata_of(probe.tags)
    if measured is None:
        raise _bad_request("Audio file might be corrupted or unsupported", "file", "invalid_value")
    offset = part_offset(filename)
    timeline = _timeline(metadata)
    if timeline is not None:  # a demo recording, whole or a part of one: the lines said in it, timed
        return _said(timeline, offset, measured)
    if metadata is not None:  # the small WAV of make_wav: the whole script, spread over the call's duration
        scenario = metadata.get("scenario")
        script = scenario.get("script") if isinstance(scenario, dict) else None
        turns = [(str(who), str(text)) for who, text in (item for item in script or [] if _is_turn(item))]
        lines = [text for _, text in turns]
        whole = metadata.get("audio_seconds")
        if offset is not None and isinstance(whole, int | float) and whole > 0:  # a part of it: its share
            spaced = zip(_segments(lines, float(whole)), turns, strict=True)
            spread = [(float(s["start"]), float(s["end"]), who, str(s["text"])) for s, (who, _) in spaced]
            return _said(spread, offset, measured)
        duration = metadata.get("duration")
        billed = float(duration) if isinstance(duration, int | float) and duration > 0 else measured
        speakers = [_speaker(who) for who, _ in turns]
        return _Heard(lines, _segments(lines, billed), speakers, measured, billed)
    if measured < 0.3:
        return _Heard([], [], [], measured, measured)
    digest = hashlib.sha256(data).digest()
    lines = [_GENERIC_TRANSCRIPTS[digest[0] % len(_GENERIC_TRANSCRIPTS)]]
    return _Heard(lines, _segments(lines, measured), ["A"], measured, measured)


def _said(timeline: Sequence[tuple[float, float, str, str]], offset: float | None, measured: float) -> _Heard:
    """The lines of a whole recording (``offset`` ``None``: all) or of the part from ``offset`` lasting
    ``measured`` seconds (those that start in it), with times from the upload's start."""
    shift = offset or 0.0
    said = timeline if offset is None else [line for line in timeline if offset <= line[0] < offset + measured]
    segments = [
        _segment(index, max(0.0, start - shift), min(measured, end - shift), text)
        for index, (start, end, _, text) in enumerate(said)
    ]
    speakers = [_speaker(who) for _, _, who, _ in said]
    return _Heard([text for *_, text in said], segments, speakers, measured, measured)


def _is_turn(item: Any) -> bool:
    return isinstance(item, list | tuple) and len(item) == 2


def _speaker(who: str) -> str:
    return "A" if who == "administrator" else "B"


def _timeline(metadata: Mapping[str, Any] | None) -> list[tuple[float, float, str, str]] | None:
    """The ``lines`` of a recording's metadata (``[start, end, speaker, text]``), or ``None`` when it has none."""
    raw = metadata.get("lines") if metadata is not None else None
    if not isinstance(raw, list):
        return None
    timeline: list[tuple[float, float, str, str]] = []
    for item in raw:
        if (
            isinstance(item, list)
            and len(item) == 4
            and all(isinstance(value, int | float) for value in item[:2])
            and all(isinstance(value, str) for value in item[2:])
        ):
            timeline.append((float(item[0]), float(item[1]), item[2], item[3]))
    return timeline


def _segment(index: int, start: float, end: float, text: str) -> dict[str, Any]:
    return {
        "id": index,
        "seek": int(start * 100) // 3000 * 3000,
        "start": round(start, 2),
        "end": round(max(start, end), 2),
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -0.21,
        "compression_ratio": 1.32,
        "no_speech_prob": 0.01,
    }


def _segments(lines: Sequence[str], duration: float) -> list[dict[str, Any]]:
    """One segment a line, the lines spread over the duration in proportion to their length."""
    if not lines:
        return []
    gap = min(0.4, duration * 0.1 / len(lines))
    speaking = max(0.0, duration - gap * len(lines))
    total = sum(max(1, len(line)) for line in lines)
    segments: list[dict[str, Any]] = []
    cursor = 0.0
    for index, line in enumerate(lines):
        length = speaking * max(1, len(line)) / total
        start, end = cursor, min(duration, cursor + length)
        segments.append(_segment(index, start, end, line))
        cursor = end + gap
    return segments


def _words(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = []
    for segment in segments:
        items = re.findall(r"[\w\-–]+", str(segment["text"]))
        start, end = float(segment["start"]), float(segment["end"])
        step = (end - start) / len(items) if items else 0.0
        for index, word in enumerate(items):
            begin, finish = round(start + index * step, 2), round(start + (index + 1) * step, 2)
            words.append({"word": word, "start": begin, "end": finish})
    return words


def _subtitles(segments: Sequence[Mapping[str, Any]], *, vtt: bool) -> str:
    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        hours, rest = divmod(millis, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        secs, millis = divmod(rest, 1000)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{'.' if vtt else ','}{millis:03d}"

    blocks = [
        ("" if vtt else f"{index + 1}\n") + f"{stamp(float(s['start']))} --> {stamp(float(s['end']))}\n{s['text']}\n"
        for index, s in enumerate(segments)
    ]
    return ("WEBVTT\n\n" if vtt else "") + "\n".join(blocks)


# ------------------------------------------------------------------------------------- messages


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _transcript_text(texts: Sequence[tuple[str, str]]) -> str:
    """The last user message (where the transcript is)."""
    users = [text for role, text in texts if role == "user"]
    return users[-1] if users else (texts[-1][1] if texts else "")


def _short_answer(texts: Sequence[tuple[str, str]]) -> str:
    text = _transcript_text(texts)
    if len([line for line in text.splitlines() if line.strip()]) >= 3:
        analysis = analyze_transcript(text)
        advice = " ".join(analysis["recommendations"][:2])
        return f"{analysis['summary']} {advice}".strip()
    return "Запрос получен. Это ответ тестового сервера: модель в нём не используется."


_MERGE_WORDS: Final = re.compile(
    r"(объедин|свод|сведи|обобщ|сгруппир|агрегир|итогов\w* отч|merge|combine|consolidat|summari[sz]e)", re.IGNORECASE
)
_BULLET: Final = re.compile(r"^\s*(?:[-*•—–]|\d{1,3}[.)])\s+(?P<text>\S.*?)\s*$")


def _asks_to_merge(prompt: str) -> bool:
    return bool(_MERGE_WORDS.search(prompt)) and bool(re.search(r"рекомендац|recommendation", prompt, re.IGNORECASE))


def _recommendation_lines(texts: Sequence[tuple[str, str]]) -> list[str]:
    """Recommendations found in the user messages: bullet lines and ``"recommendations"`` lists in JSON."""
    found: list[str] = []
    for role, text in texts:
        if role != "user":
            continue
        for line in text.splitlines():
            stripped = line.strip()
            if stripped[:1] in "{[":
                with contextlib.suppress(ValueError):
                    found.extend(_json_recommendations(json.loads(stripped)))
                    continue
            bullet = _BULLET.match(line)
            if bullet:
                found.append(bullet.group("text"))
        with contextlib.suppress(ValueError):
            found.extend(_json_recommendations(json.loads(text)))
    return found


def _json_recommendations(value: Any) -> list[str]:
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            if key == "recommendations" and isinstance(item, list):
                found.extend(str(x) for x in item if isinstance(x, str))
            else:
                found.extend(_json_recommendations(item))
        return found
    if isinstance(value, list):
        return [text for item in value for text in _json_recommendations(item)]
    return []


_THEMES: Final = (
    ("Приветствие", r"привет|представ|назван\w* клиник|своего имени"),
    ("Выявление потребности", r"потребност|выясн|уточн\w* (?:причин|жалоб)|открыт\w* вопрос"),
    ("Врач и услуга", r"врач\w* (?:и|,) |специализац|стоимост|цен[ауы]"),
    ("Работа с возражениями", r"возражен|альтернатив|сомнени"),
    ("Предложение записи", r"запис"),
    ("Следующий шаг", r"следующ|sms|смс|напоминани|что взять"),
    ("Вежливость", r"вежлив|тон\b|пожалуйста|спасибо|груб|благодар"),
)


def merge_recommendations(lines: Sequence[str]) -> tuple[str, list[str]]:
    """A merged report of many calls' recommendations: grouped by theme, most frequent first.

    Returns the report text (Russian) and the merged recommendations, one per theme or distinct line.
    """
    groups: dict[str, list[str]] = {}
    for line in lines:
        text = line.strip().strip("\"'«»").strip()
        if not text:
            continue
        groups.setdefault(recommendation_theme(text)[0], []).append(text)
    if not groups:
        return "Рекомендаций для объединения не найдено: все разобранные звонки проведены без замечаний.", []
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))  # stable: first seen first among equals
    merged: list[str] = []
    report = [f"Сводные рекомендации для администраторов (обобщено {sum(len(v) for v in groups.values())} замечаний):"]
    for number, (key, items) in enumerate(ordered, start=1):
        counts: dict[str, int] = {}
        for item in items:
            counts[item] = counts.get(item, 0) + 1
        example = max(counts, key=lambda item: counts[item])
        label = key if key in {name for name, _ in _THEMES} else ""
        merged_text = f"{label}: {example}" if label else example
        merged.append(merged_text)
        report.append(f"{number}. {merged_text} (встречается {len(items)} {_times(len(items))}).")
    top = ordered[0][0]
    report.append(
        f"В первую очередь стоит поработать над темой «{top}»."
        if top in {name for name, _ in _THEMES}
        else "В первую очередь стоит поработать над самым частым замечанием."
    )
    return "\n".join(report), merged


def recommendation_theme(text: str) -> tuple[str, str]:
    """A recommendation's group: the first ``_THEMES`` pattern it matches (key and title: the theme's
    name), else its normalised text (title: the text itself). It depends on the text only."""
    text = text.strip().strip("\"'«»").strip()
    normalized = text.lower().replace("ё", "е")
    theme = next((name for name, pattern in _THEMES if re.search(pattern, normalized)), None)
    if theme is not None:
        return theme, theme
    return re.sub(r"[^\w]+", " ", normalized).strip(), text


def _times(count: int) -> str:
    if count % 10 in (2, 3, 4) and count % 100 not in (12, 13, 14):
        return "раза"
    return "раз"


# --------------------------------------------------------------------------- report prompts
#
# The recommendations report (``callsight.report.themes``) asks three things, told apart by the schema:
# "themes": numbered recommendations -> themes with their item numbers (MAP); "merge": numbered themes
# (``N. {"title", "advice", "calls"}``) -> merged themes with member numbers (REDUCE); "actions": the
# figures as a JSON line -> a summary and prioritised actions. Every answer follows from the prompt's
# content only, and a recommendation's theme from its own text, so a range themed in one chunk or in
# many gives the same themes.

_NUMBERED: Final = re.compile(r"^\s*(?P<number>\d{1,7})[.)]\s+(?P<text>\S.*?)\s*$")


def _object_properties(node: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    resolved = _resolve(node, root)
    properties = resolved.get("properties") if isinstance(resolved, dict) else None
    return properties if isinstance(properties, dict) else {}


def report_schema_kind(schema: Mapping[str, Any]) -> str | None:
    """``"themes"``, ``"merge"`` or ``"actions"`` when the schema is one of the report's answers (by its
    properties: ``themes`` items with ``items`` / ``members``; ``summary`` + ``actions`` items with
    ``priority``), else ``None``."""
    properties = _object_properties(schema, schema)
    if set(properties) == {"themes"}:
        items = _resolve(properties["themes"], schema)
        fields = set(_object_properties(items.get("items", {}), schema)) if isinstance(items, dict) else set()
        if {"title", "advice", "items"} <= fields:
            return "themes"
        if {"title", "advice", "members"} <= fields:
            return "merge"
    if {"summary", "actions"} <= set(properties):
        actions = _resolve(properties["actions"], schema)
        fields = set(_object_properties(actions.get("items", {}), schema)) if isinstance(actions, dict) else set()
        if {"priority", "action", "reason"} <= fields:
            return "actions"
    return None


def _numbered(message: str) -> list[tuple[int, str]]:
    return [(int(m.group("number")), m.group("text")) for line in message.splitlines() if (m := _NUMBERED.match(line))]


def theme_recommendations(message: str) -> dict[str, Any]:
    """MAP: the numbered recommendations (``N. text`` lines) grouped by :func:`recommendation_theme`, in
    the order their groups first appear; a theme's advice is its first text."""
    groups: dict[str, dict[str, Any]] = {}
    for number, text in _numbered(message):
        key, title = recommendation_theme(text)
        group = groups.setdefault(key, {"title": title, "advice": text.strip().strip("\"'«»").strip(), "items": []})
        group["items"].append(number)
    return {"themes": list(groups.values())}


def merge_themes(message: str) -> dict[str, Any]:
    """REDUCE: the numbered themes (``N. {"title", "advice", "calls"}``) whose titles fall in the same group
    of :func:`recommendation_theme` (the same ``_THEMES`` theme, else the same normalised title) as one,
    titled by the theme's name (else its first member's title); its advice is that of the member with the
    most calls (the first among equals). A theme's name is in its own group: merging again changes nothing."""
    groups: dict[str, dict[str, Any]] = {}
    for number, text in _numbered(message):
        try:
            theme = json.loads(text)
        except ValueError:
            continue
        if not isinstance(theme, dict):
            continue
        title = str(theme.get("title") or "")
        calls = theme.get("calls") if isinstance(theme.get("calls"), int) else 0
        key, name = recommendation_theme(title)
        group = groups.setdefault(key, {"title": name, "advice": "", "members": [], "_calls": -1})
        group["members"].append(number)
        if calls > group["_calls"]:
            group["advice"], group["_calls"] = str(theme.get("advice") or ""), calls
    return {"themes": [{k: v for k, v in group.items() if k != "_calls"} for group in groups.values()]}


def _plural(count: int, one: str, few: str, many: str) -> str:
    if count % 10 == 1 and count % 100 != 11:
        return one
    if count % 10 in (2, 3, 4) and count % 100 not in (12, 13, 14):
        return few
    return many


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _report_data(message: str) -> dict[str, Any]:
    for line in message.splitlines():
        if line.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    return data
    return {}


def manager_actions(message: str) -> dict[str, Any]:
    """Actions: one per top problem (at most five) in the order given, then — to make three — the missed
    booking opportunities, the missed incoming calls, a general one; the summary names the totals and the
    top problem. Every number is one the prompt's JSON carries."""
    data = _report_data(message)
    raw_problems = data.get("problems")
    problems = [p for p in raw_problems if isinstance(p, dict)] if isinstance(raw_problems, list) else []
    actions: list[dict[str, Any]] = []
    for problem in problems[:5]:
        title, calls = str(problem.get("title") or ""), problem.get("calls")
        advice = str(problem.get("advice") or "") or f"Разберите с администраторами тему «{title}»."
        count = f"{calls} {_plural(calls, 'звонке', 'звонках', 'звонках')}" if isinstance(calls, int) else "звонках"
        share = f" ({problem['percent']} % проанализированных)" if problem.get("percent") is not None else ""
        actions.append({"action": advice, "reason": f"Проблема «{title}» встречается в {count}{share}."})
    missed = _mapping(data.get("missed_opportunities"))
    if len(actions) < 3 and isinstance(missed.get("calls"), int) and missed["calls"] > 0:
        actions.append({"action": "Предлагайте запись на конкретную дату и время в каждом разговоре о записи, "
                                  "переносе и цене.",
                        "reason": f"Упущенных возможностей записи: {missed['calls']}."})
    incoming = _mapping(data.get("missed_incoming_calls"))
    if len(actions) < 3 and isinstance(incoming.get("missed"), int) and incoming["missed"] > 0:
        actions.append({"action": "Перезванивайте по пропущенным входящим звонкам и усильте смену в часы пик.",
                        "reason": f"Пропущено входящих звонков: {incoming['missed']} из {incoming.get('incoming')}."})
    while len(actions) < 3:
        actions.append({"action": "Продолжайте еженедельно разбирать звонки с администраторами.",
                        "reason": "Регулярный разбор закрепляет стандарт разговора."})
    total, analysed = data.get("total_calls"), data.get("analysed_calls")
    summary = f"За период {total} звонков, проанализировано {analysed}."
    if problems:
        top = problems[0]
        summary += f" Чаще всего встречается проблема «{top.get('title')}» — {top.get('calls')} звонков."
    booking = _mapping(data.get("booking_conversion"))
    if booking.get("percent") is not None:
        summary += f" Конверсия в запись — {booking['percent']} %."
    return {"summary": summary,
            "actions": [{"priority": n, **action} for n, action in enumerate(actions, start=1)]}


def answer_report_prompt(kind: str, message: str) -> dict[str, Any]:
    """The answer to one of the report's prompts (``kind`` from :func:`report_schema_kind`)."""
    if kind == "themes":
        return theme_recommendations(message)
    if kind == "merge":
        return merge_themes(message)
    return manager_actions(message)


# ------------------------------------------------------------------------------------ JSON schema


def is_call_analysis_schema(schema: Mapping[str, Any]) -> bool:
    """Whether a JSON schema asks for Callsight's call analysis (by its top-level properties)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return False
    return len({"call_type", "outcome", "criteria", "overall_score"} & set(properties)) >= 3


#: what OpenAI's Structured Outputs take in a strict schema ("Supported schemas"): the structure, annotations, and
#: per type the supported constraints; any other keyword is refused
_SCHEMA_STRUCTURE: Final = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "$ref", "$defs",
     "definitions"}
)
_SCHEMA_ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema",
     "$id"}
)
_SCHEMA_CONSTRAINTS: Final = frozenset(
    {"pattern", "format", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "minItems",
     "maxItems"}
)
#: fine-tuned models take none of the constraints
_SCHEMA_FORMATS: Final = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_SCHEMA_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
SCHEMA_MAX_PROPERTIES: Final = 5000
SCHEMA_MAX_DEPTH: Final = 10
SCHEMA_MAX_STRING_LENGTH: Final = 120_000
SCHEMA_MAX_ENUM_VALUES: Final = 1000
SCHEMA_LARGE_ENUM: Final = 250
SCHEMA_LARGE_ENUM_MAX_LENGTH: Final = 15_000


def _strict_schema_problem(schema: Mapping[str, Any], *, fine_tuned: bool = False) -> str | None:
    """What OpenAI's strict structured outputs would reject in the schema (``None``: nothing): the root must be an
    object (not ``anyOf``); every object sets ``additionalProperties: false`` and lists every property in
    ``required``; every subschema has a ``type`` (or ``$ref``/``anyOf``/``enum``/``const``); only the supported
    keywords; at most 5,000 properties, 10 levels of nesting, 1,000 enum values and 120,000 characters of names and
    values (an enum over 250 values at most 15,000)."""
    allowed = _SCHEMA_STRUCTURE | _SCHEMA_ANNOTATIONS | (frozenset() if fine_tuned else _SCHEMA_CONSTRAINTS)
    totals = {"properties": 0, "enum_values": 0, "chars": 0}

    def walk(node: Any, context: tuple[str, ...], depth: int) -> str | None:
        if not isinstance(node, dict):
            return f"In context={context}, schema must be a JSON Schema object."
        for keyword in node:
            if keyword not in allowed:
                return f"In context={context}, '{keyword}' is not permitted."
        kinds = node.get("type")
        listed = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
        for kind in listed:
            if kind not in _SCHEMA_TYPES:
                return f"In context={context}, type '{kind}' is not supported."
        if not listed and not any(key in node for key in ("$ref", "anyOf", "enum", "const")):
            return f"In context={context}, schema must have a 'type' key."
        fmt = node.get("format")
        if fmt is not None and fmt not in _SCHEMA_FORMATS:
            return f"In context={context}, format '{fmt}' is not supported."
        problem = values(node, context)
        if problem:
            return problem
        is_object = "object" in listed or isinstance(node.get("properties"), dict)
        if is_object:
            depth += 1
            if depth > SCHEMA_MAX_DEPTH:
                return f"In context={context}, the schema exceeds {SCHEMA_MAX_DEPTH} levels of nesting."
            if node.get("additionalProperties") is not False:
                return f"In context={context}, 'additionalProperties' is required to be supplied and to be false."
            properties = node.get("properties", {})
            if not isinstance(properties, dict):
                return f"In context={context}, 'properties' must be an object."
            required = node.get("required", [])
            if not isinstance(required, list):
                return f"In context={context}, 'required' must be an array."
            missing = [key for key in properties if key not in required]
            if missing:
                return (
                    f"In context={context}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{missing[0]}'."
                )
            extra = [key for key in required if key not in properties]
            if extra:
                return f"In context={context}, Extra required key '{extra[0]}' supplied."
            totals["properties"] += len(properties)
            totals["chars"] += sum(len(str(key)) for key in properties)
            for key, sub in properties.items():
                problem = walk(sub, (*context, "properties", key), depth)
                if problem:
                    return problem
        if "items" in node:
            problem = walk(node["items"], (*context, "items"), depth)
            if problem:
                return problem
        variants = node.get("anyOf")
        if variants is not None:
            if not isinstance(variants, list) or not variants:
                return f"In context={context}, 'anyOf' must be a non-empty array."
            for index, sub in enumerate(variants):
                problem = walk(sub, (*context, "anyOf", str(index)), depth)
                if problem:
                    return problem
        for keyword in ("$defs", "definitions"):
            definitions = node.get(keyword)
            if definitions is None:
                continue
            if not isinstance(definitions, dict):
                return f"In context={context}, '{keyword}' must be an object."
            totals["chars"] += sum(len(str(key)) for key in definitions)
            for key, sub in definitions.items():
                problem = walk(sub, (*context, keyword, key), 0)
                if problem:
                    return problem
        return None

    def values(node: Mapping[str, Any], context: tuple[str, ...]) -> str | None:
        enum = node.get("enum")
        if enum is not None:
            if not isinstance(enum, list) or not enum:
                return f"In context={context}, 'enum' must be a non-empty array."
            totals["enum_values"] += len(enum)
            length = sum(len(value) for value in enum if isinstance(value, str))
            totals["chars"] += length
            if len(enum) > SCHEMA_LARGE_ENUM and length > SCHEMA_LARGE_ENUM_MAX_LENGTH:
                return (
                    f"In context={context}, an enum of more than {SCHEMA_LARGE_ENUM} values may have at most "
                    f"{SCHEMA_LARGE_ENUM_MAX_LENGTH} characters of values in total; this one has {length}."
                )
        const = node.get("const")
        if isinstance(const, str):
            totals["chars"] += len(const)
        return None

    root_kind = schema.get("type") if isinstance(schema, dict) else None
    if root_kind != "object" or "anyOf" in schema:
        shown = "anyOf" if isinstance(schema, dict) and "anyOf" in schema else root_kind
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{shown}\"'."
    problem = walk(schema, (), 0)
    if problem:
        return problem
    if totals["properties"] > SCHEMA_MAX_PROPERTIES:
        return f"The schema has {totals['properties']} object properties; at most {SCHEMA_MAX_PROPERTIES} are allowed."
    if totals["enum_values"] > SCHEMA_MAX_ENUM_VALUES:
        return f"The schema has {totals['enum_values']} enum values; at most {SCHEMA_MAX_ENUM_VALUES} are allowed."
    if totals["chars"] > SCHEMA_MAX_STRING_LENGTH:
        return (
            f"The total length of property names, definition names, enum and const values is {totals['chars']}; "
            f"at most {SCHEMA_MAX_STRING_LENGTH} characters are allowed."
        )
    return None


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 32:
        seen += 1
        target: Any = root
        for part in node["$ref"].lstrip("#").strip("/").split("/"):
            if not part:
                continue
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        extra = {key: value for key, value in node.items() if key != "$ref"}
        node = {**target, **extra} if isinstance(target, dict) else extra
    return node


def _types(node: Mapping[str, Any]) -> list[str]:
    kind = node.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    if isinstance(kind, str):
        return [kind]
    if isinstance(node.get("properties"), dict):
        return ["object"]
    if "items" in node:
        return ["array"]
    return []


def minimal_instance(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """The smallest value valid against a (structured-outputs) JSON schema: objects with their required
    properties, ``""``, numbers at their minimum, the first enum value, arrays of ``minItems`` items."""
    top = root if root is not None else schema
    node = _resolve(schema, top)
    if not isinstance(node, dict):
        return None
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    for keyword in ("anyOf", "oneOf"):
        options = node.get(keyword)
        if isinstance(options, list) and options:
            first: Any = options[0]
            return minimal_instance(first if isinstance(first, dict) else {}, top)
    if isinstance(node.get("allOf"), list) and node["allOf"]:
        merged: dict[str, Any] = {}
        for sub in node["allOf"]:
            merged.update(_resolve(sub, top) if isinstance(sub, dict) else {})
        return minimal_instance(merged, top)
    kinds = _types(node)
    kind = next((k for k in kinds if k != "null"), kinds[0] if kinds else "string")
    if kind == "object":
        properties = node.get("properties") or {}
        required = node.get("required", list(properties))
        return {key: minimal_instance(properties[key], top) for key in properties if key in required}
    if kind == "array":
        count = int(node.get("minItems", 0) or 0)
        items: Any = node.get("items")
        return [minimal_instance(items if isinstance(items, dict) else {}, top) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number_in_range(node, 0, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x" * int(node.get("minLength", 0) or 0)


def _number_in_range(node: Mapping[str, Any], value: float, *, integer: bool) -> int | float:
    low = node.get("minimum")
    exclusive_low = node.get("exclusiveMinimum")
    high = node.get("maximum")
    exclusive_high = node.get("exclusiveMaximum")
    result = float(value)
    if isinstance(low, int | float):
        result = max(result, float(low))
    if isinstance(exclusive_low, int | float) and result <= exclusive_low:
        result = float(exclusive_low) + (1 if integer else 1e-6)
    if isinstance(high, int | float):
        result = min(result, float(high))
    if isinstance(exclusive_high, int | float) and result >= exclusive_high:
        result = float(exclusive_high) - (1 if integer else 1e-6)
    return (
        math.ceil(result)
        if integer and isinstance(low, int | float) and result == low
        else (int(result) if integer else result)
    )


def _fits(value: Any, node: Mapping[str, Any]) -> bool:
    kinds = _types(node)
    checks = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
    }
    if isinstance(node.get("enum"), list):
        return value in node["enum"]
    return any(checks.get(kind, False) for kind in kinds) if kinds else True


def conform_to_schema(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """``value`` made valid against the schema: missing required properties filled with minimal values,
    properties the schema forbids dropped, enums and numeric ranges respected."""
    top = root if root is not None else schema
    node = _resolve(schema, top)
    if not isinstance(node, dict):
        return value
    for keyword in ("anyOf", "oneOf"):
        options = node.get(keyword)
        if isinstance(options, list) and options:
            for option in options:
                resolved = _resolve(option, top)
                if isinstance(resolved, dict) and _fits(value, resolved):
                    return conform_to_schema(value, resolved, top)
            return minimal_instance(options[0], top)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return value if value in node["enum"] else node["enum"][0]
    if not _fits(value, node):
        return minimal_instance(node, top)
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        required = node.get("required", [])
        result: dict[str, Any] = {}
        for key, sub in properties.items():
            if key in value:
                result[key] = conform_to_schema(value[key], sub, top)
            elif key in required:
                result[key] = minimal_instance(sub, top)
        if node.get("additionalProperties") is not False:
            result.update({key: item for key, item in value.items() if key not in properties})
        return result
    if isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            value = [conform_to_schema(item, items, top) for item in value]
        maximum = node.get("maxItems")
        return value[:maximum] if isinstance(maximum, int) else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_in_range(node, value, integer=isinstance(value, int))
    return value


def _generic_value(texts: Sequence[tuple[str, str]], schema: Mapping[str, Any]) -> Any:
    """A minimal instance of the schema; when the prompt asks to merge recommendations, its top-level
    string-list properties get the merged recommendations and its string properties the report."""
    value = minimal_instance(schema)
    prompt = "\n".join(text for _, text in texts)
    if not isinstance(value, dict) or not _asks_to_merge(prompt):
        return value
    report, merged = merge_recommendations(_recommendation_lines(texts))
    properties = _resolve(schema, schema).get("properties") or {}
    for key in value:
        node = _resolve(properties.get(key, {}), schema)
        if not isinstance(node, dict) or "enum" in node:
            continue
        items = _resolve(node.get("items", {}), schema) if isinstance(node.get("items"), dict) else {}
        if _types(node)[:1] == ["array"] and _types(items)[:1] == ["string"]:
            value[key] = list(merged)
        elif _types(node)[:1] == ["string"]:
            value[key] = report
    return value


# ------------------------------------------------------------------------------- call analysis

_ADMIN_LABELS: Final = (
    "администратор",
    "оператор",
    "регистратор",
    "менеджер",
    "сотрудник",
    "клиника",
    "admin",
    "administrator",
    "operator",
    "agent",
)
_PATIENT_LABELS: Final = (
    "пациент",
    "пациентка",
    "клиент",
    "клиентка",
    "звонящий",
    "абонент",
    "собеседник",
    "patient",
    "caller",
    "client",
    "customer",
)
_LABEL_LINE: Final = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\[?\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?\]?\s*(?:-->\s*\S+\s*)?)?"
    r"(?P<label>[A-Za-zА-Яа-яЁё]+(?:\s+\d+)?)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.*)$"
)
_GENERIC_SPEAKER: Final = re.compile(r"^(?:спикер|говорящий|голос|speaker|участник)(?:\s+\d+)?$", re.IGNORECASE)
_HEADING: Final = re.compile(
    r"(?im)^\s*(?:#+\s*)?(?:транскрипт\w*|расшифровк\w*|текст звонка|диалог|разговор|transcript)\b[^\n:]*:?[ \t]*"
)
_OUTGOING_INTRO: Final = re.compile(r"администратор|клиник\w*\s*[«\"]|из клиники|\bзвонят\b")
_TRANSCRIPT_TAG: Final = re.compile(r"<(transcript|транскрипт)[^>]*>(?P<text>.*?)</\1>", re.IGNORECASE | re.DOTALL)
_FENCE: Final = re.compile(r"```[^\n]*\n(?P<text>.*?)```", re.DOTALL)


@dataclass
class _Dialogue:
    lines: list[tuple[str | None, str]]  # (speaker: "administrator" | "patient" | None if unknown, text)
    incoming: bool | None  # None: unknown

    def by(self, speaker: str) -> list[tuple[int, str]]:
        """Lines of the speaker; every line when the speakers are unknown."""
        return [(i, text) for i, (who, text) in enumerate(self.lines) if who == speaker or who is None]


def _extract_transcript(message: str) -> str:
    tagged = _TRANSCRIPT_TAG.search(message)
    if tagged:
        return tagged.group("text")
    fences = [match.group("text") for match in _FENCE.finditer(message)]
    if fences:
        return max(fences, key=len)
    headings = list(_HEADING.finditer(message))
    heading = headings[-1] if headings else None
    if heading is not None and message[heading.end() :].strip():
        return message[heading.end() :]
    return message


def _parse_dialogue(message: str) -> _Dialogue:
    transcript = _extract_transcript(message)
    direction = re.search(r"\b(входящ|исходящ|incoming|outgoing)", _norm(message.replace(transcript, " ")))
    text = transcript.replace("\r\n", "\n")
    raw = [line.strip() for line in text.split("\n") if line.strip()]
    labelled: list[tuple[str | None, str]] = []
    generic: list[tuple[str, str]] = []
    for line in raw:
        match = _LABEL_LINE.match(line)
        label = match.group("label").lower() if match else ""
        if match and label in _ADMIN_LABELS:
            labelled.append(("administrator", match.group("text").strip()))
        elif match and label in _PATIENT_LABELS:
            labelled.append(("patient", match.group("text").strip()))
        elif match and _GENERIC_SPEAKER.match(label):
            generic.append((label, match.group("text").strip()))
        elif labelled:
            speaker, previous = labelled[-1]
            labelled[-1] = (speaker, f"{previous} {line}")
    if len(labelled) >= 2:
        lines: list[tuple[str | None, str]] = []
        for speaker, line in labelled:  # consecutive lines of one speaker are one turn
            if lines and lines[-1][0] == speaker:
                lines[-1] = (speaker, f"{lines[-1][1]} {line}".strip())
            elif line:
                lines.append((speaker, line))
        return _Dialogue(lines, lines[0][0] == "administrator" if lines else None)
    plain = [text for _, text in generic] if len(generic) >= 2 else raw
    if len(plain) == 1:  # one run of text: sentences, speakers unknown
        sentences = [s for s in re.split(r"(?<=[.!?…])\s+", plain[0]) if s]
        return _Dialogue([(None, s) for s in sentences], None)
    if not plain:
        return _Dialogue([], None)
    if direction is not None:  # the prompt says who called: whoever picks up speaks first
        outgoing = direction.group(1) in ("исходящ", "outgoing")
    else:
        outgoing = (
            len(plain) > 1
            and len(plain[0]) <= 40
            and not _CLINIC.search(_norm(plain[0]))
            and bool(_OUTGOING_INTRO.search(_norm(plain[1])))
        )
    first, second = ("patient", "administrator") if outgoing else ("administrator", "patient")
    return _Dialogue([(first if i % 2 == 0 else second, line) for i, line in enumerate(plain)], not outgoing)


def _norm(text: str) -> str:
    return text.lower().replace("ё", "е")


def _quote(text: str, limit: int = 160) -> str:
    """A short quote: the sentence of ``text`` around ``pattern`` or the text itself, cut to ``limit``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _sentence(text: str, pattern: re.Pattern[str]) -> str:
    for sentence in re.split(r"(?<=[.!?…])\s+", text):
        if pattern.search(_norm(sentence)):
            return _quote(sentence)
    return _quote(text)


_TYPE_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        "spam",
        re.compile(
            r"реклам|предлагаем (?:вам )?(?:наши )?услуг|коммерческ\w* предложени|автоматическ\w* сообщени|"
            r"одобрен кредит|помогаем клиникам|с главным врачом или руководител"
        ),
    ),
    (
        "complaint",
        re.compile(r"жалоб|пожаловаться|недовол|безобраз|грубо|хамств|третий раз звоню|дважды списали|претензи"),
    ),
    ("reschedule", re.compile(r"перенес|перенос|не принимает|отменяется")),
    ("cancellation", re.compile(r"отмен")),
    ("test_results", re.compile(r"результат|анализ\w*(?: ваши)? готов|сдавал")),
    ("price_question", re.compile(r"сколько[^.?!]{0,40}сто[ия]т|стоимост|\bцен[аеуы]?\b|прайс|почем")),
    ("booking", re.compile(r"записаться|записать\b|запишите|попасть|заявк")),
)
_SHORT_CALL: Final = re.compile(r"ошиб\w* номером|неудобно говорить|за рулем|не туда попал")
_REMINDER: Final = re.compile(r"напомина|подтверждаете визит")
_BOOKED: Final = re.compile(
    BOOKING_CONFIRMATION_MARKER.replace("ё", "е") + r"|\bзаписал[аи]? вас\b|\bзапись подтвержден|\bждем вас\b.*\bв \d"
)
_HELLO: Final = re.compile(r"здравствуй|добр(?:ый|ое|ого) (?:день|утро|вечер|дня|утра|вечера)|приветству")
_CLINIC: Final = re.compile(r"клиник|медцентр|медицинск\w* центр")
_OWN_NAME: Final = re.compile(
    r"меня зовут|администратор \w+|(?:это|на связи) [а-я]+(?:,|\.|!| администратор)|"
    + "|".join(rf"\b{_norm(admin.first_name)}\b" for admin in ADMINISTRATORS)
)
_DISCOVERY: Final = re.compile(
    r"чем могу помочь|слушаю вас|подскажите|расскажите|уточните|вы у нас уже были|вы раньше у нас|наблюдались|"
    r"когда вам (?:было бы )?удобно|что вас беспокоит|какой врач|к какому врачу|раньше у нас были"
)
_OFFER: Final = re.compile(
    r"могу (?:вас )?(?:записать|предложить|подобрать)|(?:записать|запишу) вас|вас (?:записать|запишу)|"
    r"записывать\b|записываться\?|подбер(?:у|ем)|подобрать [^.?!]*время\?|рекомендую записаться|идите к|"
    r"переносить будем|ближайшая запись|есть свободное время|могу записать|давайте (?:я )?(?:вас )?запишу"
)
_SPECIALTY: Final = re.compile(
    r"терапевт|кардиолог|гинеколог|невролог|эндокринолог|оториноларинголог|лор-врач|офтальмолог|уролог|"
    r"гастроэнтеролог|дерматолог|узи|хирург|педиатр|стоматолог"
)
_DOCTOR_NAME: Final = re.compile(r"(?:\bк|\bу|ведет|врач) [а-я]+ [а-я]+(?:вичу|вне|вича|вны|ичне|ичны|вич|вна)\b")
_PRICE: Final = re.compile(r"\d[\d  ]*(?:руб|₽)|стоимость|стоит\b")
_NEXT_STEP: Final = re.compile(
    r"\bsms\b|\bсмс\b|придет (?:sms|смс|сообщение|напоминани)|подойдите за|возьмите паспорт|"
    r"свяжется с вами|перезвонит до|номер вашего обращения|ссылк\w* на онлайн-запись|натощак"
)
_POLITE: Final = re.compile(
    r"пожалуйста|спасибо|благодар|извин|прошу прощения|будем рады|всего доброго|хорошего дня|очень жаль|"
    r"приношу|рад[аы]? помочь|будем ждать"
)
_RUDE: Final = re.compile(
    r"^ждите|^сейчас\.$|как хотите|это не ко мне|что я сделаю|нам ничего не надо|ладно, все\.|^угу|^ясно\.$|"
    r"звоните позже|^не знаю|пишите жалобу|^фамилия\?|^робот\.|^бывает\.$|^ладно\.$|^отменил[а]?\.$|^всё занято|"
    r"не надо\. до свидания|^и что\b|сами решайте"
)
_OBJECTION: Final = re.compile(
    r"дорог|подумаю|не готов|перезвоню|позвоню позже|попозже|пораньше|не получится|другой вариант|"
    r"в другую клинику|именно к|безобраз|жалоб|пожаловаться|нельзя работать|и ничего|дважды списали|грубо|"
    r"то есть как|не могу|нельзя"
)
_HANDLED: Final = re.compile(
    r"понимаю|могу предложить|есть еще|к сожалению|приношу извинения|очень жаль|будем рады|будем ждать|"
    r"конечно|разбер|зафиксир|вижу|извин|тогда могу|перезвоню|подберем|другое время|другому"
)
_NEGATIVE: Final = re.compile(
    r"безобраз|жалоб|пожаловаться|нельзя работать|дорог|жаль|не получится|в другую клинику|грубо|ничего!|"
    r"то есть как|третий раз|дважды списали|не выслушал|никто даже не извинился|плохо|ужасн|недовол"
)
_POSITIVE: Final = re.compile(
    r"спасибо большое|отлично|понравилось|хорошо, что позвонили|спасибо, что перезвонили|с удовольствием|"
    r"мне подходит|давайте|записывайте|удобно|спасибо!"
)
_SPECIALTY_NAMES: Final = (
    ("оториноларинголог", "оториноларинголог"),
    ("лор", "ЛОР-врач"),
    ("терапевт", "терапевт"),
    ("кардиолог", "кардиолог"),
    ("гинеколог", "гинеколог"),
    ("невролог", "невролог"),
    ("эндокринолог", "эндокринолог"),
    ("офтальмолог", "офтальмолог"),
    ("уролог", "уролог"),
    ("гастроэнтеролог", "гастроэнтеролог"),
    ("дерматолог", "дерматолог"),
    ("узи", "УЗИ"),
)
_TOPICS: Final = {
    "booking": "пациент хотел записаться на приём",
    "reschedule": "перенос записи на приём",
    "cancellation": "отмена записи на приём",
    "price_question": "вопрос о стоимости услуг",
    "test_results": "вопрос о результатах анализов",
    "complaint": "жалоба пациента",
    "other": "справочный вопрос или звонок без записи",
    "spam": "рекламный или нецелевой звонок",
}
_RECOMMENDATIONS: Final = {
    "greeting": "Начинайте разговор с приветствия, названия клиники и своего имени: «Здравствуйте! Клиника "
    "«…», администратор …».",
    "need_discovery": "Выясняйте потребность пациента открытым вопросом («Чем могу помочь?», «Что вас "
    "беспокоит?») и уточняйте детали до того, как предлагать решение.",
    "doctor_and_service": "Называйте врача, его специализацию и стоимость услуги, чтобы пациент понимал, к кому и "
    "за сколько записывается.",
    "objection_handling": "Отрабатывайте возражения: проявите понимание и предложите альтернативу (другое время, "
    "другого врача, онлайн-запись), а не заканчивайте разговор.",
    "booking_offer": "Предлагайте запись на приём с конкретной датой и временем — в этом звонке пациенту не "
    "предложили записаться.",
    "next_step": "Завершайте звонок понятным следующим шагом: придёт SMS-напоминание, когда подойти и что взять с "
    "собой.",
    "politeness": "Следите за тоном: говорите «пожалуйста» и «спасибо», благодарите за звонок и вежливо прощайтесь.",
}
_CRITERIA: Final = (
    "greeting",
    "need_discovery",
    "doctor_and_service",
    "objection_handling",
    "booking_offer",
    "next_step",
    "politeness",
)


def _classify(dialogue: _Dialogue) -> str:
    """The call type from what the call opened with: the first sentence with a keyword decides, looking no
    further than the first booking offer (an offer's wording says nothing about why the call was made)."""
    for _, text in dialogue.lines:
        said: list[str] = []
        offered = False
        for sentence in re.split(r"(?<=[.!?…])\s+", _norm(text)):
            if _OFFER.search(sentence) or _BOOKED.search(sentence):
                offered = True
                break
            said.append(sentence)
        turn = " ".join(said)
        for call_type, pattern in _TYPE_RULES:
            if pattern.search(turn):
                return call_type
        if offered:
            break
    return "other"


def _score(value: int, evidence: str) -> dict[str, Any]:
    return {"score": max(0, min(10, value)), "evidence": _quote(evidence) if evidence else ""}


def analyze_transcript(message: str) -> dict[str, Any]:
    """A call analysis (the JSON of ``callsight.analysis.models.CallAnalysis``) derived from the transcript
    in ``message``: speakers from labels ("Администратор:" / "Пациент:") or, unlabelled, from the turn
    order; every score from evidence found in the text. A criterion that does not apply to the call (an
    objection that was never raised, a booking offer on a spam call) scores 10 with no evidence."""
    dialogue = _parse_dialogue(message)
    admin = dialogue.by("administrator")
    patient = dialogue.by("patient")
    full = _norm(" ".join(text for _, text in dialogue.lines))
    call_type = _classify(dialogue)
    short_call = bool(_SHORT_CALL.search(full)) and len(dialogue.lines) <= 6
    reminder = call_type == "other" and bool(_REMINDER.search(full))
    window = 3 if dialogue.incoming else 5
    booking_line = next((text for _, text in dialogue.lines if _BOOKED.search(_norm(text))), "")
    booked = bool(booking_line) and call_type != "spam"

    # greeting: the administrator's first line
    first_admin = admin[0][1] if admin else ""
    first = _norm(first_admin)
    hello, clinic, name = bool(_HELLO.search(first)), bool(_CLINIC.search(first)), bool(_OWN_NAME.search(first))
    greeting_score = (
        10
        if hello and clinic and name
        else 8
        if hello and (clinic or name)
        else (3 if clinic or name else 1 if hello else 0)
    )
    greeting = _score(greeting_score, first_admin)

    # need discovery
    asked = [text for _, text in admin if _DISCOVERY.search(_norm(text))]
    if call_type == "spam" or short_call:
        need = _score(10, "")
    elif asked:
        need = _score(min(10, 6 + 2 * len(asked)), _sentence(asked[0], _DISCOVERY))
    else:
        questions = [text for _, text in admin if "?" in text]
        need = _score(5 if questions else 2, questions[0] if questions else "")

    # offering a booking
    offers = [text for i, text in admin if i >= 1 and _OFFER.search(_norm(text))]
    offer_applies = call_type != "spam" and not short_call and not (reminder and not offers)
    if not offer_applies:
        booking_offer = _score(10, "")
    elif offers:
        booking_offer = _score(9, _sentence(offers[0], _OFFER))
    else:
        booking_offer = _score(0, "")

    # the doctor and the service
    service_applies = call_type in ("booking", "reschedule", "price_question", "test_results") or bool(offers)
    doctor_lines = [text for _, text in admin if _SPECIALTY.search(_norm(text)) or _DOCTOR_NAME.search(_norm(text))]
    price_lines = [text for _, text in admin if _PRICE.search(_norm(text))]
    if not service_applies or short_call:
        doctor_and_service = _score(10, "")
    elif doctor_lines and price_lines:
        doctor_and_service = _score(9, _sentence(price_lines[0], _PRICE))
    elif doctor_lines:
        doctor_and_service = _score(6, _sentence(doctor_lines[0], _SPECIALTY))
    elif price_lines:
        doctor_and_service = _score(6, _sentence(price_lines[0], _PRICE))
    else:
        doctor_and_service = _score(2, "")

    # objections: the patient's after the opening, each answered by the administrator's next line
    objections = [(i, text) for i, text in patient if i >= window and _OBJECTION.search(_norm(text))]
    if call_type == "complaint":
        objections = [(i, text) for i, text in patient if _OBJECTION.search(_norm(text))] or objections
    answers: list[str] = []
    unanswered: list[str] = []
    for index, objection in objections:
        reply = next((text for i, text in admin if i > index), "")
        if reply and _HANDLED.search(_norm(reply)) and not _RUDE.search(_norm(reply)):
            answers.append(reply)
        else:
            unanswered.append(reply or objection)
    if not objections or (dialogue.incoming is None and not admin):
        objection_handling = _score(10, "")
    elif not unanswered:
        objection_handling = _score(9, answers[0])
    elif answers:
        objection_handling = _score(5, unanswered[0])
    else:
        objection_handling = _score(2, unanswered[0])

    # a clear next step
    steps = [text for _, text in admin if _NEXT_STEP.search(_norm(text))]
    if call_type == "spam" or short_call:
        next_step = _score(10, "")
    elif steps:
        next_step = _score(9, _sentence(steps[0], _NEXT_STEP))
    else:
        next_step = _score(1, "")

    # politeness and tone
    polite = [text for _, text in admin if _POLITE.search(_norm(text))]
    rude = [text for _, text in admin if _RUDE.search(_norm(text).strip())]
    if rude:
        politeness = _score(4 if polite else 2, rude[0])
    elif len(polite) >= 2:
        politeness = _score(10, _sentence(polite[0], _POLITE))
    elif polite:
        politeness = _score(8, _sentence(polite[0], _POLITE))
    else:
        politeness = _score(3, "")

    criteria = {
        "greeting": greeting,
        "need_discovery": need,
        "doctor_and_service": doctor_and_service,
        "objection_handling": objection_handling,
        "booking_offer": booking_offer,
        "next_step": next_step,
        "politeness": politeness,
    }
    weights = {
        "greeting": 1.0,
        "need_discovery": 1.0,
        "doctor_and_service": 1.0,
        "objection_handling": 1.0,
        "booking_offer": 1.5,
        "next_step": 1.0,
        "politeness": 1.5,
    }
    overall = round(10 * sum(weights[key] * criteria[key]["score"] for key in _CRITERIA) / sum(weights.values()))

    # the patient's mood
    negative = sum(len(_NEGATIVE.findall(_norm(text))) for _, text in patient) + (2 if call_type == "complaint" else 0)
    positive = sum(len(_POSITIVE.findall(_norm(text))) for _, text in patient)
    if dialogue.incoming is None:
        negative, positive = len(_NEGATIVE.findall(full)), len(_POSITIVE.findall(full))
    sentiment = (
        "negative" if negative > positive else "positive" if positive >= 2 and positive > negative else ("neutral")
    )

    reason = _outcome_reason(
        call_type, full, booked=booked, offered=bool(offers), short_call=short_call, reminder=reminder
    )
    recommendations = [_RECOMMENDATIONS[key] for key in _CRITERIA if criteria[key]["score"] < 7]
    if criteria["politeness"]["score"] < 7 and rude:
        recommendations[-1] += f" Избегайте фраз вроде «{_quote(rude[0], 60)}»."
    return {
        "call_type": call_type,
        "outcome": {"booked": booked, "reason": reason},
        "criteria": criteria,
        "overall_score": max(0, min(100, overall)),
        "patient_sentiment": sentiment,
        "summary": _summary(dialogue, call_type, full, booked=booked, reason=reason, overall=max(0, min(100, overall))),
        "recommendations": recommendations,
    }


def _outcome_reason(call_type: str, full: str, *, booked: bool, offered: bool, short_call: bool, reminder: bool) -> str:
    if booked:
        return (
            "Пациент перенёс запись на новое время."
            if call_type == "reschedule"
            else "Администратор предложил время, и пациент записался на приём."
        )
    if call_type == "spam":
        return "Рекламный звонок: запись не требовалась."
    if short_call:
        return "Разговор не состоялся: звонок по ошибке или в неудобное время."
    if reminder:
        return "Пациент уже записан: звонок-напоминание, новая запись не требовалась."
    reasons = (
        (r"отпуск", "Нужный пациенту врач в отпуске, пациент перезвонит позже."),
        (r"дорог", "Пациента не устроила стоимость."),
        (r"вечером или в субботу|в это время я не могу|не получится", "Не нашлось удобного пациенту времени."),
        (r"просто узнаю цены", "Пациент только уточнял цену."),
        (r"в другую клинику", "Пациент недоволен обслуживанием и не стал записываться."),
        (r"отмен", "Пациент отменил визит."),
        (r"подумаю|перезвоню|не готов", "Пациент решил подумать и перезвонить."),
    )
    for pattern, text in reasons:
        if re.search(pattern, full):
            return text
    if not offered and call_type != "other":
        return "Администратор не предложил записаться на приём."
    return "Запись в этом звонке не требовалась."


def _summary(dialogue: _Dialogue, call_type: str, full: str, *, booked: bool, reason: str, overall: int) -> str:
    direction = {True: "Входящий звонок", False: "Исходящий звонок", None: "Звонок"}[dialogue.incoming]
    specialty = next((name for stem, name in _SPECIALTY_NAMES if re.search(rf"\b{stem}", full)), None)
    topic = _TOPICS[call_type]
    if specialty and call_type in ("booking", "reschedule", "cancellation", "price_question", "test_results"):
        topic += f" ({specialty})"
    outcome = "Пациент записан на приём." if booked else reason
    return f"{direction}: {topic}. {outcome} Оценка работы администратора — {overall} из 100."


# ------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stubs.openai",
        description="A stub OpenAI API server: transcriptions of the demo recordings, call analyses.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--latency-ms-per-audio-minute", type=float, default=0.0, help="added to a transcription per minute of audio"
    )
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument(
        "--fault-kinds", default=",".join(FAULT_KINDS), help="comma-separated subset of " + ",".join(FAULT_KINDS)
    )
    parser.add_argument("--timeout-seconds", type=float, default=5.0, help="how long the timeout fault holds")
    parser.add_argument("--any-chat-model", action="store_true", help="accept any chat model name, not only gpt-*")
    args = parser.parse_args(argv)

    stub = OpenAIStub(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        seed=args.seed,
        latency_ms=args.latency_ms,
        latency_ms_per_audio_minute=args.latency_ms_per_audio_minute,
        fault_rate=args.fault_rate,
        fault_kinds=[kind.strip() for kind in args.fault_kinds.split(",") if kind.strip()],
        timeout_seconds=args.timeout_seconds,
        chat_models=["*"] if args.any_chat_model else None,
    )
    return serve_until_signal(
        stub, lambda stub: f"OpenAI stub listening on {stub.url} (base_url {stub.base_url}, key {args.api_key})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
