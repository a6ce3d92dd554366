"""The report: the chunks' themes merged by the LLM, every number counted from the call items."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

from callsight.report.models import ChunkThemes, LLMUsage, ManagerActions, MergedTheme, Problem, ProblemExample, Report
from callsight.report.stats import CallData, CallView, definitions, read_calls, share, stats_of

if TYPE_CHECKING:  # the writer comes in from the caller; importing it would import openai (~0.6 s) here
    from callsight.report.themes import ThemeWriter

_EXAMPLES: Final = 3
NO_ANALYSED_CALLS: Final = "За период нет проанализированных звонков: тем и действий нет."


def rank_problems(themes: Sequence[MergedTheme], data: CallData) -> tuple[list[Problem], int]:
    """The problems, most calls first (ties by title), and the number of folded calls.

    A theme's calls are the distinct analysed calls of ``data`` among its members: a member naming a call
    that is not there (or a recommendation position that call does not have) is not counted."""
    analysed = {call.call_id: call for call in data.calls if call.analysed}
    texts = {call.call_id: {rec.position: rec.text for rec in call.recommendations} for call in analysed.values()}
    folded: set[str] = set()
    found: list[tuple[MergedTheme, dict[str, str]]] = []
    for theme in themes:
        calls: dict[str, str] = {}  # call_id -> its first recommendation in the theme
        for ref in theme.refs:
            text = texts.get(ref.call_id, {}).get(ref.position)
            if text is not None:
                calls.setdefault(ref.call_id, text)
        if calls:
            folded.update(calls)
            found.append((theme, calls))
    found.sort(key=lambda item: (-len(item[1]), item[0].title.casefold(), item[0].title))
    problems: list[Problem] = []
    shown: set[str] = set()  # calls already an example of a higher-ranked problem
    for rank, (theme, calls) in enumerate(found, start=1):
        examples = _examples([analysed[call_id] for call_id in calls], calls, shown)
        shown.update(example.call_id for example in examples)
        problems.append(Problem(rank=rank, title=theme.title, advice=theme.advice, calls=len(calls),
                                share=share(len(calls), len(analysed)) or 0.0, examples=examples))
    return problems, len(folded)


def _examples(calls: Sequence[CallView], recommendation: dict[str, str], shown: set[str]) -> list[ProblemExample]:
    """Up to three calls: not yet shown for another problem, with the fewest recommendations (the problem
    stands out there), the lowest overall score, the earliest; different administrators preferred. The
    quote is the evidence of the call's weakest criterion (else its summary, else the recommendation)."""
    ordered = sorted(calls, key=lambda c: (c.call_id in shown, len(c.recommendations),
                                           c.overall_score if c.overall_score is not None else 101,
                                           c.call_time or "9999", c.call_id))
    chosen: list[CallView] = []
    admins: set[str] = set()
    for call in ordered:
        if len(chosen) < _EXAMPLES and call.administrator not in admins:
            chosen.append(call)
            admins.add(call.administrator)
    for call in ordered:
        if len(chosen) < _EXAMPLES and call not in chosen:
            chosen.append(call)
    chosen.sort(key=ordered.index)
    return [ProblemExample(**call.example(call.quote() or recommendation[call.call_id]).model_dump(),
                           recommendation=recommendation[call.call_id]) for call in chosen]


def _added(total: LLMUsage, part: LLMUsage) -> LLMUsage:
    return LLMUsage(requests=total.requests + part.requests,
                    invalid_answers=total.invalid_answers + part.invalid_answers,
                    largest_prompt_tokens=max(total.largest_prompt_tokens, part.largest_prompt_tokens),
                    prompt_tokens=total.prompt_tokens + part.prompt_tokens,
                    completion_tokens=total.completion_tokens + part.completion_tokens)


def build_report(*, client_id: str, start_date: date, end_date: date, calls: Sequence[dict[str, Any]],
                 chunks: Sequence[ChunkThemes], writer: ThemeWriter, model: str,
                 now: datetime | None = None) -> Report:
    """The report of a range: ``calls`` are its call items, ``chunks`` the MAP results of their
    recommendations (``ThemeWriter.theme_chunk``). The LLM merges the themes and writes the manager's
    actions (two or more requests); the counts come from ``calls`` only. ``usage`` covers these requests."""
    data = read_calls(calls, start_date=start_date, end_date=end_date)
    stats = stats_of(data)
    before, writer.usage = writer.usage, LLMUsage()
    try:
        problems, folded = rank_problems(writer.merge(chunks), data)
        if stats.analysed_calls:
            actions = writer.write_actions(stats, problems)
        else:
            actions = ManagerActions(summary=NO_ANALYSED_CALLS, actions=[])
        used = writer.usage
    finally:
        writer.usage = _added(before, writer.usage)
    return Report(
        client_id=client_id, start_date=start_date, end_date=end_date,
        generated_at=(now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), model=model,
        total_calls=stats.total_calls, analysed_calls=stats.analysed_calls,
        calls_with_recommendations=stats.calls_with_recommendations, folded_calls=folded, problems=problems,
        administrators=stats.administrators, call_types=stats.call_types, booking=stats.booking,
        missed_opportunities=stats.missed_opportunities, missed_by_hour=stats.missed_by_hour,
        actions=actions.actions, summary=actions.summary, definitions=definitions(), skipped=stats.skipped,
        usage=used)
