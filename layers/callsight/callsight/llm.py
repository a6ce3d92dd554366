"""The OpenAI(-compatible) client: key from Secrets Manager (cached), base URL, timeout and retries.

Imported only by the transcription and analysis workers: ``openai`` costs ~0.9 s to import.

Two layers of retries, each for what the other cannot see:
- the client itself retries 408/409/429/5xx (honouring ``retry-after``), timeouts and broken connections
  (``ECONNRESET``, refused, cut off before the answer) ``max_retries`` times;
- :func:`with_retries` retries what reaches us as a 200 the client could not read: a truncated or invalid
  JSON body, a body the SDK's models refuse; and, once the client has given up, a connection error again
  (a reset storm outlasting the client's short backoff). With a cap, backoff and jitter.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import openai
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters
from openai import OpenAI

from callsight.config import OpenAIConfig

logger = Logger(child=True)
T = TypeVar("T")

#: answers retried by :func:`with_retries`: unreadable 200s, and connections the client gave up on
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    json.JSONDecodeError,  # a truncated or invalid JSON body answered 200
    UnicodeDecodeError,  # a body cut inside a UTF-8 character (Russian text is 2 bytes a letter)
    openai.APIResponseValidationError,  # a body that is JSON but not the API's shape
    openai.APIConnectionError,  # includes APITimeoutError
)


def openai_client(config: OpenAIConfig) -> OpenAI:
    """The client retries 408/409/429/5xx and connection errors itself (honouring ``retry-after``)
    ``max_retries`` times.

    One client per key and settings for the container's life, so warm invocations reuse its open
    connections; a rotated key (re-read after 5 minutes) gets a new one.
    """
    api_key = str(parameters.get_secret(config.openai_api_key_secret, max_age=300))
    return _client(api_key, config.openai_base_url or None, config.openai_timeout_seconds, config.openai_max_retries)


@lru_cache(maxsize=4)
def _client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> OpenAI:
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: no retry); the n-th retry waits ``base_delay * 2**(n-1)`` seconds, at most
    ``max_delay``, with up to 25 % jitter."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 16.0


def with_retries(call: Callable[[], T], *, policy: RetryPolicy, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, again after an error of :data:`TRANSIENT_ERRORS`, ``policy.attempts`` times in all; the last
    error propagates. ``what`` names the request in the log (never its content)."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            if attempt >= policy.attempts:
                raise
            delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            delay *= 1 + random.uniform(0, 0.25)
            logger.warning("transient OpenAI answer: retrying", extra={
                "request": what, "attempt": attempt, "error": type(exc).__name__, "retry_in_s": round(delay, 2)})
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
