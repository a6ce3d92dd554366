"""The OpenAI(-compatible) client: key from Secrets Manager (cached), base URL, timeout and retries.

Imported only by the transcription and analysis workers: ``openai`` costs ~0.9 s to import.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from openai import OpenAI


def openai_client(*, secret_name: str, base_url: str, timeout: float, max_retries: int) -> OpenAI:
    """The client retries 408/409/429/5xx itself (honouring ``retry-after``) ``max_retries`` times."""
    api_key = str(parameters.get_secret(secret_name, max_age=300))
    return OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=max_retries)
