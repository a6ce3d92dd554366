"""Process 4, the recommendations report: a pure library (no AWS).

The pipeline: for each chunk of calls, ``ThemeWriter.theme_chunk(recs)`` (MAP) -> ``ChunkThemes`` JSON;
then ``build_report(...)`` merges all chunks' themes (REDUCE), counts everything from the call items and
asks for the manager's actions -> ``Report`` JSON and ``render_markdown(report)``.
"""

from typing import TYPE_CHECKING, Any

from callsight.report.build import build_report, rank_problems
from callsight.report.errors import ReportFailed
from callsight.report.markdown import render_markdown
from callsight.report.models import (
    Action,
    AdministratorStats,
    BookingStats,
    CallTypeStats,
    ChunkTheme,
    ChunkThemes,
    Example,
    HourStats,
    LLMUsage,
    ManagerActions,
    MergedTheme,
    MissedByHour,
    MissedOpportunities,
    Problem,
    ProblemExample,
    Recommendation,
    RecRef,
    Report,
    ReportStats,
)
from callsight.report.stats import (
    BOOKING_POSSIBLE_TYPES,
    NO_BOOKING_OFFER_MAX_SCORE,
    compute_stats,
    definitions,
    estimate_tokens,
    recommendation_tokens,
    recommendations_of,
)

if TYPE_CHECKING:
    from callsight.report.themes import ThemeWriter


def __getattr__(name: str) -> Any:
    """``ThemeWriter`` on first use: it imports openai (~0.6 s), which the planner and the Markdown don't need."""
    if name == "ThemeWriter":
        from callsight.report.themes import ThemeWriter  # noqa: PLC0415 - lazily, on purpose

        return ThemeWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BOOKING_POSSIBLE_TYPES",
    "NO_BOOKING_OFFER_MAX_SCORE",
    "Action",
    "AdministratorStats",
    "BookingStats",
    "CallTypeStats",
    "ChunkTheme",
    "ChunkThemes",
    "Example",
    "HourStats",
    "LLMUsage",
    "ManagerActions",
    "MergedTheme",
    "MissedByHour",
    "MissedOpportunities",
    "Problem",
    "ProblemExample",
    "RecRef",
    "Recommendation",
    "Report",
    "ReportFailed",
    "ReportStats",
    "ThemeWriter",
    "build_report",
    "compute_stats",
    "definitions",
    "estimate_tokens",
    "rank_problems",
    "recommendation_tokens",
    "recommendations_of",
    "render_markdown",
]
