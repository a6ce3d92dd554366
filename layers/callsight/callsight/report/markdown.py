"""The report as Markdown for the clinic (Russian headings, tables)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Final

from callsight.report.models import Example, ProblemExample, Report

CALL_TYPE_LABELS: Final = {
    "booking": "Запись на приём",
    "reschedule": "Перенос записи",
    "cancellation": "Отмена записи",
    "price_question": "Вопрос о цене",
    "test_results": "Результаты анализов",
    "complaint": "Жалоба",
    "other": "Другое",
    "spam": "Спам, реклама",
    "unknown": "Не определён",
}
CRITERION_LABELS: Final = {
    "greeting": "Приветствие",
    "need_discovery": "Выявление потребности",
    "doctor_and_service": "Врач и услуга",
    "objection_handling": "Работа с возражениями",
    "booking_offer": "Предложение записи",
    "next_step": "Следующий шаг",
    "politeness": "Вежливость",
}
NO_ADMINISTRATOR: Final = "не указан"


def percent(value: float | None) -> str:
    """A share as a Russian percentage with one decimal ("12,5 %"), "—" when there is none."""
    return "—" if value is None else f"{100 * value:.1f}".replace(".", ",") + " %"


def decimal(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}".replace(".", ",")


def _day(value: date) -> str:
    return value.strftime("%d.%m.%Y")


def _time(value: str | None) -> str:
    if not value:
        return "время не указано"
    try:
        return datetime.fromisoformat(value).strftime("%d.%m.%Y %H:%M")
    except ValueError:
        return value


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "—"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)
    return lines


def _example(example: Example, advice: str = "") -> str:
    who = example.administrator or NO_ADMINISTRATOR
    quote = " ".join(example.quote.split())
    line = f"- {_time(example.call_time)}, {who} (`{example.call_id}`)" + (f": «{quote}»" if quote else "")
    if isinstance(example, ProblemExample):
        recommendation = " ".join(example.recommendation.split())
        if recommendation and recommendation.casefold() != " ".join(advice.split()).casefold():
            line += f" — рекомендация: {recommendation}"
    return line


def render_markdown(report: Report) -> str:
    """The whole report: summary, problems, administrators, call types, conversion, missed opportunities,
    missed calls by hour, the manager's actions and how every figure is computed."""
    out: list[str] = [
        "# Отчёт по рекомендациям",
        "",
        f"Клиника: **{report.client_id}** · период: {_day(report.start_date)} — {_day(report.end_date)} · "
        f"сформирован: {_time(report.generated_at)} UTC · модель: {report.model}",
        "",
        f"- Звонков за период: **{report.total_calls}**",
        f"- Проанализировано: **{report.analysed_calls}**",
        f"- С рекомендациями: **{report.calls_with_recommendations}**, вошли в темы: **{report.folded_calls}**",
        "",
    ]
    if report.summary:
        out += [report.summary, ""]

    out += ["## Частые проблемы", ""]
    if report.problems:
        out += _table(["№", "Проблема", "Звонков", "Доля звонков", "Что делать"],
                      [[str(p.rank), p.title, str(p.calls), percent(p.share), p.advice] for p in report.problems])
        out.append("")
        for problem in report.problems:
            if problem.examples:
                out += [f"**{problem.rank}. {problem.title}** — примеры:", ""]
                out += [_example(example, problem.advice) for example in problem.examples]
                out.append("")
    else:
        out += ["Рекомендаций за период нет.", ""]

    out += ["## Администраторы", ""]
    out += _table(["Администратор", "Звонков", "Проанализировано", "Записано", "Доля записанных",
                   "Средняя оценка", "Слабый критерий", "Его оценка"],
                  [[a.administrator or NO_ADMINISTRATOR, str(a.calls), str(a.analysed), str(a.booked),
                    percent(a.booked_share), decimal(a.average_score),
                    CRITERION_LABELS.get(a.weakest_criterion or "", a.weakest_criterion or "—"),
                    decimal(a.weakest_criterion_score)] for a in report.administrators])
    out.append("")

    out += ["## Типы звонков", ""]
    out += _table(["Тип звонка", "Звонков", "Доля", "Записано", "Доля записанных", "Средняя оценка"],
                  [[CALL_TYPE_LABELS.get(t.call_type, t.call_type), str(t.calls), percent(t.share), str(t.booked),
                    percent(t.booked_share), decimal(t.average_score)] for t in report.call_types])
    out.append("")

    booking = report.booking
    types = ", ".join(CALL_TYPE_LABELS.get(t, t).lower() for t in booking.call_types)
    out += ["## Конверсия в запись", "",
            f"Конверсия: **{percent(booking.conversion)}** — записано {booking.booked_calls} из "
            f"{booking.eligible_calls} проанализированных звонков, где запись возможна ({types}).",
            f"Записано во всех проанализированных звонках: {booking.booked_all_types}.", ""]

    missed = report.missed_opportunities
    out += ["## Упущенные возможности", "",
            f"Упущенных возможностей: **{missed.count}** ({percent(missed.share)} из {missed.eligible_calls} "
            f"состоявшихся разговоров, где запись возможна): пациент не записан, запись не предлагалась "
            f"(оценка «предложение записи» не выше {missed.booking_offer_max_score} из 10).", ""]
    if missed.examples:
        out += ["Примеры:", ""] + [_example(example) for example in missed.examples] + [""]

    hours = report.missed_by_hour
    out += ["## Пропущенные звонки по часам", "",
            f"Пропущено входящих: **{hours.missed}** из {hours.incoming} ({percent(hours.missed_share)}).", ""]
    if hours.hours:
        out += _table(["Час", "Входящих", "Пропущено", "Доля пропущенных"],
                      [[f"{h.hour:02d}:00–{(h.hour + 1) % 24:02d}:00", str(h.incoming), str(h.missed),
                        percent(h.missed_share)] for h in hours.hours])
        out.append("")
    if hours.without_time:
        out += [f"Без времени звонка (не вошли в таблицу): {hours.without_time}.", ""]

    out += ["## Что сделать в первую очередь", ""]
    if report.actions:
        out += [f"{a.priority}. **{' '.join(a.action.split())}**" + (f" — {' '.join(a.reason.split())}"
                                                                       if a.reason.strip() else "")
                for a in report.actions]
    else:
        out.append("Действий нет.")
    out.append("")

    out += ["## Как считаются показатели", ""]
    out += [f"- {text}" for text in report.definitions.values()]
    if report.skipped:
        out += ["", "Не использовано: " + ", ".join(f"{reason} — {count}" for reason, count in report.skipped.items())
                + "."]
    return "\n".join(out).rstrip() + "\n"
