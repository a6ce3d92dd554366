"""The OpenAI(-compatible) client: key from Secrets Manager (cached), base URL, timeout and retries.

Imported only by the transcription and analysis workers: ``openai`` costs ~0.9 s to import.
"""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.utilities import parameters
from openai import OpenAI

from callsight.config import OpenAIConfig


def openai_client(config: OpenAIConfig) -> OpenAI:
    """The client retries 408/409/429/5xx itself (honouring ``retry-after``) ``max_retries`` times.

    One client per key and settings for the container's life, so warm invocations reuse its open
    connections; a rotated key (re-read after 5 minutes) gets a new one.
    """
    api_key = str(parameters.get_secret(config.openai_api_key_secret, max_age=300))
    return _client(api_key, config.openai_base_url or None, config.openai_timeout_seconds, config.openai_max_retries)


@lru_cache(maxsize=4)
def _client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> OpenAI:
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
