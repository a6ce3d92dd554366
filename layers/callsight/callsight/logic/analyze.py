"""Analysis: a call's transcript to a validated ``CallAnalysis`` stored on the call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import openai
from openai import OpenAI
from pydantic import ValidationError

from callsight.analysis.chat_models import UNUSABLE_ANSWER_ERRORS, RequestBudget, chat_options
from callsight.analysis.models import CallAnalysis
from callsight.analysis.prompt import build_messages
from callsight.dal.calls import CallKey
from callsight.dal.recordings import ObjectStore
from callsight.dates import utc_now_iso
from callsight.errors import CallFailed
from callsight.llm import RetryPolicy
from callsight.transcription.speakers import format_dialogue

#: the same transcript gets the same scores, where the model takes a temperature (reasoning models do not)
ANALYSIS_TEMPERATURE: Final = 0.0


@dataclass(frozen=True)
class AnalysisSettings:
    model: str
    #: requests at most for one call's analysis, whatever went wrong (see ``RequestBudget``)
    attempts: int
    #: the backoff between requests after a transient answer
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Analyzer:
    def __init__(self, *, store: ObjectStore, client: OpenAI, settings: AnalysisSettings,
                 clinic_settings: dict[str, Any]) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.clinic = clinic_settings

    def analyze(self, key: CallKey, call: dict[str, Any]) -> dict[str, Any]:
        """Analyse one call (its stored item) with the clinic's model, else the configured one, sending the
        parameters its family takes. Within ``attempts`` requests: a transient answer (unreadable 200,
        connection lost) is sent again after a backoff, an answer failing validation is asked again; then
        the call fails with the last problem. An API error (4xx; 429/5xx once the client's retries ran
        out) fails the call at once."""
        if not call.get("transcript_key"):
            raise CallFailed("no transcript for this call: transcribe it first")
        transcript = self.store.get_json(call["transcript_key"])
        dialogue = format_dialogue(transcript.get("lines") or []) or str(transcript.get("text", ""))
        messages = build_messages(transcript=dialogue, call=call, settings=self.clinic)
        model = str(self.clinic.get("model") or self.settings.model)
        options = chat_options(model, temperature=ANALYSIS_TEMPERATURE)
        budget = RequestBudget(self.settings.attempts, retry=self.settings.retry)
        problem = "no answer"
        while budget.left:
            try:
                completion = budget.request(lambda: self.client.chat.completions.parse(
                    model=model, messages=messages, response_format=CallAnalysis,  # type: ignore[arg-type]
                    **options), what="call analysis")
            except UNUSABLE_ANSWER_ERRORS as exc:
                problem = _short(exc)  # ValueError includes a truncated JSON body the retries did not outlast
                continue
            except openai.APIStatusError as exc:
                raise CallFailed(f"analysis failed: HTTP {exc.status_code} {str(exc.message)[:300]}") from None
            except openai.APIError as exc:
                raise CallFailed(f"analysis failed after {budget.used} request(s): {type(exc).__name__}: "
                                 f"{str(exc.message)[:300]}") from None
            message = completion.choices[0].message
            if message.parsed is not None:
                return _stored(message.parsed, model)
            problem = f"the model refused: {message.refusal}" if message.refusal else "empty answer"
        raise CallFailed(f"analysis failed validation after {budget.used} attempts: {problem}")


def _stored(analysis: CallAnalysis, model: str) -> dict[str, Any]:
    return {"analysis": analysis.model_dump(mode="json"), "call_type": analysis.call_type.value,
            "booked": analysis.outcome.booked, "overall_score": analysis.overall_score,
            "patient_sentiment": analysis.patient_sentiment, "analysis_model": model, "analyzed_at": utc_now_iso()}


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "answer"
        message = errors[0]["msg"] if errors else ""
        return f"{exc.error_count()} schema error(s), first at {where or 'answer'}: {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
