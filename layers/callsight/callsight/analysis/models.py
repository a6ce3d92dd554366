"""The analysis of one call, as the LLM must return it (OpenAI structured output, strict JSON schema)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CallType(StrEnum):
    BOOKING = "booking"
    RESCHEDULE = "reschedule"
    CANCELLATION = "cancellation"
    PRICE_QUESTION = "price_question"
    TEST_RESULTS = "test_results"
    COMPLAINT = "complaint"
    OTHER = "other"
    SPAM = "spam"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcome(_Strict):
    booked: bool = Field(description="Whether the patient was booked (or rebooked) during the call.")
    reason: str = Field(description="Why the patient was or was not booked, in Russian, one sentence.")


class CriterionScore(_Strict):
    score: int = Field(ge=0, le=10, description="0 (absent) to 10 (exemplary).")
    evidence: str = Field(description="A short quote from the transcript supporting the score ('' if none).")


class QualityCriteria(_Strict):
    greeting: CriterionScore = Field(description="Greeting and introduction: clinic and own name.")
    need_discovery: CriterionScore = Field(description="Finding out the patient's need.")
    doctor_and_service: CriterionScore = Field(description="Presenting the doctor and the service.")
    objection_handling: CriterionScore = Field(description="Handling objections (price, time, doubts).")
    booking_offer: CriterionScore = Field(description="Offering a booking.")
    next_step: CriterionScore = Field(description="Closing with a clear next step.")
    politeness: CriterionScore = Field(description="Politeness and tone.")


class CallAnalysis(_Strict):
    call_type: CallType
    outcome: Outcome
    criteria: QualityCriteria
    overall_score: int = Field(ge=0, le=100, description="Overall quality of the administrator's work, 0-100.")
    patient_sentiment: Literal["positive", "neutral", "negative"]
    summary: str = Field(description="Two or three sentences in Russian: what the call was about and how it ended.")
    recommendations: list[str] = Field(
        description="Concrete advice for the administrator, in Russian; empty if the call was exemplary.")
