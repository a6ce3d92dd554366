"""The report's error (its class name is what Step Functions Retry/Catch match on)."""

from __future__ import annotations

from callsight.errors import CallsightError


class ReportFailed(CallsightError):
    """The LLM could not produce a usable part of the report: an API error, or answers failing validation
    after every attempt. The message names the HTTP status, never the API key."""
