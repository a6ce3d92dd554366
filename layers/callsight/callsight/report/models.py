"""The recommendations report and its parts, as JSON: every model dumps with ``model_dump(mode="json")``
and loads back with ``model_validate`` (the pipeline keeps chunks' themes and the report in S3).

Numbers are computed from the call items only (:mod:`callsight.report.stats`, :mod:`callsight.report.build`);
the LLM supplies wording (theme titles, advice, the manager's actions), never a count.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class RecRef(_Frozen):
    """One recommendation of one call: ``position`` is its index in the call's ``analysis.recommendations``."""

    call_id: str
    position: int


class Recommendation(_Frozen):
    call_id: str
    position: int
    text: str

    @property
    def ref(self) -> RecRef:
        return RecRef(call_id=self.call_id, position=self.position)


# ------------------------------------------------------------------------------------------ themes


class ChunkTheme(BaseModel):
    """A theme the LLM found among one chunk's recommendations, with the recommendations it covers."""

    title: str
    advice: str
    refs: list[RecRef]


class ChunkThemes(BaseModel):
    """The MAP step's result for one chunk of calls (stored as JSON between the pipeline's tasks)."""

    themes: list[ChunkTheme]
    recommendations: int = Field(default=0, description="recommendations given (distinct call_id + position)")
    texts: int = Field(default=0, description="distinct (normalised) texts among them: what was sent to the LLM")
    requests: int = Field(default=0, description="LLM answers used (one per prompt the chunk was split into)")


class MergedTheme(BaseModel):
    """A final theme of the REDUCE step: the union of the chunk themes merged into it."""

    title: str
    advice: str
    refs: list[RecRef]

    def call_ids(self) -> set[str]:
        return {ref.call_id for ref in self.refs}


# ------------------------------------------------------------------------------------------ stats


class Example(BaseModel):
    call_id: str
    call_time: str | None
    administrator: str
    quote: str


class ProblemExample(Example):
    recommendation: str = Field(description="that call's recommendation the theme covers")


class AdministratorStats(BaseModel):
    administrator: str = Field(description="'' when the call has no responsible user")
    calls: int
    analysed: int
    booked: int
    booked_share: float | None
    average_score: float | None
    weakest_criterion: str | None
    weakest_criterion_score: float | None


class CallTypeStats(BaseModel):
    call_type: str = Field(description="a CallType value, or 'unknown'")
    calls: int
    share: float
    booked: int
    booked_share: float | None
    average_score: float | None


class BookingStats(BaseModel):
    call_types: list[str] = Field(description="the types where a booking is possible")
    eligible_calls: int
    booked_calls: int
    conversion: float | None
    booked_all_types: int


class MissedOpportunities(BaseModel):
    booking_offer_max_score: int
    eligible_calls: int
    count: int
    share: float | None
    examples: list[Example]


class HourStats(BaseModel):
    hour: int
    incoming: int
    missed: int
    missed_share: float


class MissedByHour(BaseModel):
    incoming: int
    missed: int
    missed_share: float | None
    without_time: int = Field(description="incoming calls whose call_time is absent or unreadable")
    hours: list[HourStats] = Field(description="hours of the day (local) with incoming calls, in order")


class ReportStats(BaseModel):
    total_calls: int
    analysed_calls: int
    calls_with_recommendations: int
    skipped: dict[str, int] = Field(description="what could not be used, by reason")
    administrators: list[AdministratorStats]
    call_types: list[CallTypeStats]
    booking: BookingStats
    missed_opportunities: MissedOpportunities
    missed_by_hour: MissedByHour


# ----------------------------------------------------------------------------------------- report


class Problem(BaseModel):
    rank: int
    title: str
    advice: str
    calls: int
    share: float
    examples: list[ProblemExample]


class Action(BaseModel):
    priority: int
    action: str
    reason: str


class ManagerActions(BaseModel):
    summary: str
    actions: list[Action]


class LLMUsage(BaseModel):
    requests: int = 0
    invalid_answers: int = Field(default=0, description="answers that failed validation and were asked again")
    largest_prompt_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def max_prompt_tokens(self) -> int:
        """The largest prompt (an alias of ``largest_prompt_tokens``)."""
        return self.largest_prompt_tokens


class Report(BaseModel):
    client_id: str
    start_date: date
    end_date: date
    generated_at: str = Field(description="ISO UTC, e.g. 2026-11-28T10:15:00Z")
    model: str
    total_calls: int
    analysed_calls: int
    calls_with_recommendations: int
    folded_calls: int
    problems: list[Problem]
    administrators: list[AdministratorStats]
    call_types: list[CallTypeStats]
    booking: BookingStats
    missed_opportunities: MissedOpportunities
    missed_by_hour: MissedByHour
    actions: list[Action]
    summary: str
    definitions: dict[str, str]
    skipped: dict[str, int]
    usage: LLMUsage = Field(default_factory=LLMUsage,
                            description="the LLM requests of the merge and the actions (not the chunks')")
