"""The OpenAI(-compatible) client: key from Secrets Manager (cached), base URL, timeout and retries.

Imported only by the transcription and analysis workers: ``openai`` costs ~0.9 s to import.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from openai import OpenAI

from callsight.config import OpenAIConfig


def openai_client(config: OpenAIConfig) -> OpenAI:
    """The client retries 408/409/429/5xx itself (honouring ``retry-after``) ``max_retries`` times."""
    api_key = str(parameters.get_secret(config.openai_api_key_secret, max_age=300))
    return OpenAI(api_key=api_key, base_url=config.openai_base_url or None, timeout=config.openai_timeout_seconds,
                  max_retries=config.openai_max_retries)
