"""The Markdown report: its Russian headings, and numbers equal to the report's."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

from callsight.report import Report, ThemeWriter, build_report, recommendations_of, render_markdown
from callsight.report.markdown import CALL_TYPE_LABELS, NO_ADMINISTRATOR, decimal, percent
from infra.stubs.openai import OpenAIStub
from tests.unit.test_report_stats import END, START, make_calls, odd_items

HEADINGS = ("# Отчёт по рекомендациям", "## Частые проблемы", "## Администраторы", "## Типы звонков",
            "## Конверсия в запись", "## Упущенные возможности", "## Пропущенные звонки по часам",
            "## Что сделать в первую очередь", "## Как считаются показатели")


@pytest.fixture(scope="module")
def report() -> Iterator[Report]:
    calls = make_calls(400, 21)
    calls[0]["analysis"]["recommendations"] = ["Не говорите «да | нет» — объясняйте."]  # a pipe in a table cell
    items = [*calls, *odd_items(calls)]
    with OpenAIStub() as stub:
        writer = ThemeWriter(openai.OpenAI(api_key="stub-openai-key", base_url=stub.base_url, max_retries=0),
                             model="gpt-4.1-mini")
        chunk = writer.theme_chunk([rec for call in calls for rec in recommendations_of(call)])
        yield build_report(client_id="clinic-7", start_date=START, end_date=END, calls=items, chunks=[chunk],
                           writer=writer, model="gpt-4.1-mini")


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading + "\n")
    following = markdown.find("\n## ", start + len(heading))
    return markdown[start:following if following >= 0 else None]


def _rows(section: str) -> list[list[str]]:
    """The table rows of a section (no header, no rule), cells split on unescaped pipes."""
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_headings_are_present_in_order(report: Report) -> None:
    markdown = render_markdown(report)
    positions = [markdown.index(heading + "\n") for heading in HEADINGS]
    assert positions == sorted(positions) and positions[0] == 0
    assert "clinic-7" in markdown and "01.11.2026 — 30.11.2026" in markdown and report.model in markdown


def test_totals_and_problems_equal_the_report(report: Report) -> None:
    markdown = render_markdown(report)
    assert f"Звонков за период: **{report.total_calls}**" in markdown
    assert f"Проанализировано: **{report.analysed_calls}**" in markdown
    assert f"вошли в темы: **{report.folded_calls}**" in markdown
    rows = _rows(_section(markdown, "## Частые проблемы"))
    assert [(int(r[0]), r[1], int(r[2]), r[3]) for r in rows] == [
        (p.rank, p.title, p.calls, percent(p.share)) for p in report.problems]
    assert any("да | нет" in r[1] or "да | нет" in r[4] for r in rows)  # the pipe stayed inside its cell
    for row, problem in zip(rows, report.problems, strict=True):
        value = float(row[3].removesuffix(" %").replace(",", "."))
        assert value == pytest.approx(100 * problem.share, abs=0.05 + 1e-9)  # one decimal shown
    for problem in report.problems:
        for example in problem.examples:
            assert f"`{example.call_id}`" in _section(markdown, "## Частые проблемы")


def test_tables_equal_the_report(report: Report) -> None:
    markdown = render_markdown(report)
    admins = _rows(_section(markdown, "## Администраторы"))
    assert [(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in admins] == [
        (a.administrator or NO_ADMINISTRATOR, a.calls, a.analysed, a.booked, percent(a.booked_share),
         decimal(a.average_score)) for a in report.administrators]
    types = _rows(_section(markdown, "## Типы звонков"))
    assert [(r[0], int(r[1]), r[2], int(r[3])) for r in types] == [
        (CALL_TYPE_LABELS[t.call_type], t.calls, percent(t.share), t.booked) for t in report.call_types]
    hours = _rows(_section(markdown, "## Пропущенные звонки по часам"))
    assert [(int(r[0][:2]), int(r[1]), int(r[2]), r[3]) for r in hours] == [
        (h.hour, h.incoming, h.missed, percent(h.missed_share)) for h in report.missed_by_hour.hours]
    assert sum(int(r[2]) for r in hours) + report.missed_by_hour.without_time >= report.missed_by_hour.missed


def test_conversion_missed_opportunities_and_actions_equal_the_report(report: Report) -> None:
    markdown = render_markdown(report)
    booking = _section(markdown, "## Конверсия в запись")
    assert f"**{percent(report.booking.conversion)}**" in booking
    assert f"записано {report.booking.booked_calls} из {report.booking.eligible_calls}" in booking
    missed = _section(markdown, "## Упущенные возможности")
    opportunities = report.missed_opportunities
    assert f"**{opportunities.count}** ({percent(opportunities.share)} из {opportunities.eligible_calls}" in missed
    assert all(f"`{e.call_id}`" in missed for e in opportunities.examples) and opportunities.examples
    hours = _section(markdown, "## Пропущенные звонки по часам")
    assert f"**{report.missed_by_hour.missed}** из {report.missed_by_hour.incoming}" in hours
    actions = _section(markdown, "## Что сделать в первую очередь")
    numbered = re.findall(r"^(\d+)\. \*\*(.+?)\*\*", actions, re.MULTILINE)
    assert [(int(n), text) for n, text in numbered] == [(a.priority, a.action) for a in report.actions]
    assert all(text in markdown for text in report.definitions.values())


def test_formatting() -> None:
    assert percent(0.1234) == "12,3 %" and percent(None) == "—" and percent(1.0) == "100,0 %"
    assert decimal(72.25) == "72,2" and decimal(None) == "—"
