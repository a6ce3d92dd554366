"""The LLM's part of the report: it words, the data counts.

- MAP (``theme_chunk``): numbered recommendations of a chunk of calls -> themes listing the numbers;
- REDUCE (``merge``): numbered themes (title, advice, computed call count) -> merged themes listing the
  numbers of their members, hierarchically when all themes do not fit one prompt;
- ``write_actions``: the computed figures -> a summary and 3-5 prioritised actions for the manager.

Every answer is a strict structured output (``client.chat.completions.parse``, with the parameters the
model's family takes: ``callsight.analysis.chat_models``) checked again here, within ``attempts`` requests
(a ``RequestBudget``): an unreadable 200 or a lost connection is sent again after a backoff, an answer
failing validation is asked again; then :class:`ReportFailed`. An API error is :class:`ReportFailed` at
once (the client itself retries 429/5xx ``max_retries`` times).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar

import openai
from openai.types.chat import ChatCompletionMessageParam, ParsedChatCompletion
from pydantic import BaseModel, ConfigDict, ValidationError

from callsight.analysis.chat_models import UNUSABLE_ANSWER_ERRORS, RequestBudget, chat_options
from callsight.errors import validation_problems
from callsight.llm import RetryPolicy
from callsight.report.errors import ReportFailed
from callsight.report.models import (
    Action,
    ChunkTheme,
    ChunkThemes,
    LLMUsage,
    ManagerActions,
    MergedTheme,
    Problem,
    Recommendation,
    RecRef,
    ReportStats,
)
from callsight.report.stats import estimate_tokens

OTHER_TITLE: Final = "Прочее"
OTHER_ADVICE: Final = "Рекомендации, которые не вошли ни в одну из тем."
MAX_ACTIONS: Final = 5
_MAX_TITLE: Final = 160  # characters of a theme's title / advice sent in the merge prompt
_MAX_ADVICE: Final = 500
_MAX_LEVELS: Final = 12  # merge levels at most (each must reduce the number of themes)
_MIN_COVERAGE: Final = 0.5  # a map answer must assign at least this share of the numbers it was given


# ------------------------------------------------------------------------------ answer schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThemeOfItems(_Strict):
    title: str
    advice: str
    items: list[int]


class RecommendationThemes(_Strict):
    """The MAP answer."""

    themes: list[ThemeOfItems]


class ThemeOfThemes(_Strict):
    title: str
    advice: str
    members: list[int]


class MergedThemes(_Strict):
    """The REDUCE answer."""

    themes: list[ThemeOfThemes]


class ActionAnswer(_Strict):
    priority: int
    action: str
    reason: str


class ManagerActionsAnswer(_Strict):
    """The actions answer: wording only, the figures are in the prompt."""

    summary: str
    actions: list[ActionAnswer]


MAP_SYSTEM: Final = """\
Ты — аналитик качества обслуживания в частной медицинской клинике. Тебе дают пронумерованный список \
рекомендаций администраторам, которые были даны по разным телефонным звонкам. Сгруппируй их в темы — \
типичные проблемы в работе администраторов.
Правила:
- у темы короткий заголовок (2–5 слов) и совет администраторам (одно-два предложения), по-русски;
- items — номера рекомендаций этой темы; каждый номер из списка должен попасть ровно в одну тему;
- объединяй рекомендации об одном и том же, даже если они сформулированы по-разному;
- рекомендации, не похожие ни на какие другие, помести в тему «Прочее»;
- не придумывай номеров и не считай ничего: только номера из списка.
Отвечай строго по схеме."""
MAP_HEADER: Final = "Рекомендации (номер. текст):"

MERGE_SYSTEM: Final = """\
Ты — аналитик качества обслуживания в частной медицинской клинике. Тебе дают пронумерованный список тем \
(проблем в работе администраторов), найденных в разных частях данных: у каждой заголовок (title), совет \
(advice) и число звонков (calls), в которых она встречается. Объедини темы об одном и том же.
Правила:
- у итоговой темы заголовок (2–5 слов), совет (одно-два предложения) и members — номера исходных тем;
- каждая исходная тема должна попасть ровно в одну итоговую; тема, не похожая на другие, остаётся \
отдельной итоговой темой из одного номера;
- число звонков дано для ориентира: не пересчитывай его и не пиши чисел в ответе.
Отвечай строго по схеме."""
MERGE_HEADER: Final = "Темы (номер. JSON):"

ACTIONS_SYSTEM: Final = """\
Ты — консультант руководителя частной медицинской клиники. Тебе дают итоги работы администраторов за \
период, посчитанные по данным: звонки, конверсию в запись, упущенные возможности, пропущенные входящие \
звонки по часам, показатели администраторов и частые проблемы с числом звонков.
Напиши короткое резюме (2–4 предложения) и от 3 до 5 действий для руководителя по приоритету \
(priority 1 — самое важное): что сделать (action) и почему (reason, со ссылкой на данные).
Используй только числа из данных: ничего не пересчитывай и не придумывай.
Отвечай строго по схеме."""
ACTIONS_HEADER: Final = "Итоги периода (JSON):"

_Answer = TypeVar("_Answer", bound=BaseModel)
_Result = TypeVar("_Result")


class _Unusable(Exception):
    """A well-formed answer that cannot be used (e.g. none of its numbers is in the list)."""


@dataclass
class _Text:
    """One distinct (normalised) recommendation text and every recommendation that has it."""

    text: str
    refs: list[RecRef] = field(default_factory=list)


def normalise(text: str) -> str:
    """The key identical texts share: case, ``ё``/``е``, spacing and the punctuation around it ignored."""
    return " ".join(text.casefold().replace("ё", "е").split()).strip(" .,;:!?-–—\"'«»")


def title_key(title: str) -> str:
    """Themes whose titles have the same key are one theme."""
    return re.sub(r"[^\w]+", " ", title.casefold().replace("ё", "е")).strip()


def _clean(text: str, limit: int = 400) -> str:
    text = " ".join(text.split()).strip("\"'«» ")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _combined(themes: Iterable[tuple[str, str, Sequence[RecRef]]]) -> list[MergedTheme]:
    """Themes with the same title key as one (the first title, the first advice given); refs once each."""
    found: dict[str, tuple[str, list[str], dict[RecRef, None]]] = {}
    for title, advice, refs in themes:
        if not refs:
            continue
        key = title_key(title) or title_key(OTHER_TITLE)
        entry = found.setdefault(key, (title.strip() or OTHER_TITLE, [], {}))
        if advice.strip():
            entry[1].append(advice.strip())
        entry[2].update(dict.fromkeys(refs))
    return [MergedTheme(title=title, advice=advices[0] if advices else "", refs=list(refs))
            for title, advices, refs in found.values()]


def _calls(theme: MergedTheme) -> int:
    return len(theme.call_ids())


def _scrub(text: str, secret: str) -> str:
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"\bsk-[\w*-]+", "sk-***", text)


class ThemeWriter:
    """Asks the LLM (``client``: an ``openai.OpenAI``) for the report's themes and actions.

    ``max_prompt_tokens`` bounds every prompt (estimated with :func:`estimate_tokens`, the schema
    included): the map splits a chunk into several requests, the merge goes hierarchical. ``usage``
    adds up the requests made (each attempt is one; the client's own 429/5xx retries are not seen).
    """

    def __init__(self, client: openai.OpenAI, *, model: str, attempts: int = 3,
                 max_prompt_tokens: int = 12_000, retry: RetryPolicy | None = None) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self.model = model
        self.attempts = attempts
        self.retry = retry or RetryPolicy()
        self._options = chat_options(model)  # the report keeps the model's default temperature
        self.max_prompt_tokens = max_prompt_tokens
        self.usage = LLMUsage()
        self._map_overhead = _overhead(MAP_SYSTEM, MAP_HEADER, RecommendationThemes)
        self._merge_overhead = _overhead(MERGE_SYSTEM, MERGE_HEADER, MergedThemes)
        longest_theme = estimate_tokens("99999. " + _theme_json("я" * _MAX_TITLE, "я" * _MAX_ADVICE, 99_999)) + 1
        smallest = max(self._map_overhead + 60, self._merge_overhead + 2 * longest_theme)
        if max_prompt_tokens < smallest:
            raise ValueError(f"max_prompt_tokens must be at least {smallest}: the instructions and two themes "
                             f"must fit a prompt")

    # ------------------------------------------------------------------------------------- MAP

    def theme_chunk(self, recs: Sequence[Recommendation]) -> ChunkThemes:
        """The themes of a chunk's recommendations. Identical (normalised) texts are sent once, every
        recommendation having it kept; the texts are split into prompts of at most ``max_prompt_tokens``."""
        texts: dict[str, _Text] = {}
        seen: set[RecRef] = set()
        for rec in recs:
            text = " ".join(rec.text.split())
            if not text or rec.ref in seen:
                continue
            seen.add(rec.ref)
            texts.setdefault(normalise(text) or text, _Text(text)).refs.append(rec.ref)
        themes: list[tuple[str, str, Sequence[RecRef]]] = []
        batches = self._batches(list(texts.values()), lambda item: item.text, self._map_overhead, truncate=True)
        for batch, lines in batches:
            messages = _messages(MAP_SYSTEM, MAP_HEADER + "\n" + "\n".join(lines))
            themes.extend(self._ask("theming recommendations", messages, RecommendationThemes,
                                    partial(_map_themes, batch=batch)))
        merged = _combined(themes)
        return ChunkThemes(themes=[ChunkTheme(title=t.title, advice=t.advice, refs=t.refs) for t in merged],
                           recommendations=len(seen), texts=len(texts), requests=len(batches))

    # ---------------------------------------------------------------------------------- REDUCE

    def merge(self, chunks: Sequence[ChunkThemes]) -> list[MergedTheme]:
        """The chunks' themes merged into final themes. Themes with the same title are one theme before
        the LLM sees them; what does not fit one prompt is merged in groups that fit, then the merged
        again, until one prompt holds them all (or a level merges nothing more)."""
        themes = _combined((t.title, t.advice, t.refs) for chunk in chunks for t in chunk.themes)
        for _ in range(_MAX_LEVELS):
            if len(themes) <= 1:
                return themes
            ordered = sorted(themes, key=lambda t: (-_calls(t), title_key(t.title)))
            groups = self._batches(ordered, _theme_body, self._merge_overhead, truncate=False)
            merged: list[MergedTheme] = []
            for group, lines in groups:
                if len(group) == 1:
                    merged.extend(group)
                    continue
                messages = _messages(MERGE_SYSTEM, MERGE_HEADER + "\n" + "\n".join(lines))
                merged.extend(self._ask("merging themes", messages, MergedThemes,
                                        partial(_merge_themes, group=group)))
            result = _combined((t.title, t.advice, t.refs) for t in merged)
            if len(groups) == 1 or len(result) >= len(themes):
                return result
            themes = result
        return themes

    # --------------------------------------------------------------------------------- actions

    def write_actions(self, stats: ReportStats, problems: Sequence[Problem]) -> ManagerActions:
        """A summary and 3-5 prioritised actions for the manager, from the computed figures (which the
        prompt carries; the answer has wording only)."""
        problem_count, admin_count = min(len(problems), 10), min(len(stats.administrators), 15)
        while True:
            data = actions_data(stats, problems[:problem_count], admin_count)
            messages = _messages(ACTIONS_SYSTEM, ACTIONS_HEADER + "\n" + json.dumps(data, ensure_ascii=False))
            if _estimate(messages, ManagerActionsAnswer) <= self.max_prompt_tokens or (
                    problem_count <= 1 and admin_count <= 1):
                break
            problem_count, admin_count = max(1, problem_count - 2), max(1, admin_count - 3)
        return self._ask("writing the manager's actions", messages, ManagerActionsAnswer, _actions)

    # -------------------------------------------------------------------------------- plumbing

    def _batches(self, items: Sequence[_Result], body: Callable[[_Result], str], overhead: int, *,
                 truncate: bool) -> list[tuple[list[_Result], list[str]]]:
        """Consecutive items in groups whose numbered lines ("1. body") fit the prompt budget."""
        budget = self.max_prompt_tokens - overhead
        batches: list[tuple[list[_Result], list[str]]] = []
        group: list[_Result] = []
        lines: list[str] = []
        used = 0

        def line(number: int, item: _Result) -> tuple[str, int]:
            prefix, text = f"{number}. ", body(item)
            if truncate and estimate_tokens(prefix + text) + 1 > budget:
                text = text[: max(1, 3 * (budget - 1) - len(prefix) - 1)] + "…"
            return prefix + text, estimate_tokens(prefix + text) + 1  # the line and its newline

        for item in items:
            text, cost = line(len(group) + 1, item)
            if group and used + cost > budget:
                batches.append((group, lines))
                group, lines, used = [], [], 0
                text, cost = line(1, item)
            group.append(item)
            lines.append(text)
            used += cost
        if group:
            batches.append((group, lines))
        return batches

    def _ask(self, what: str, messages: list[ChatCompletionMessageParam], answer_type: type[_Answer],
             check: Callable[[_Answer], _Result]) -> _Result:
        problem = "no answer"
        estimate = _estimate(messages, answer_type)
        budget = RequestBudget(self.attempts, retry=self.retry)

        def send() -> ParsedChatCompletion[_Answer]:
            self.usage.requests += 1
            try:
                return self.client.chat.completions.parse(
                    model=self.model, messages=messages, response_format=answer_type, **self._options)
            except Exception:
                self._count(estimate, None, 0)  # no usage in the answer: the prompt is estimated
                raise

        while budget.left:
            try:
                completion = budget.request(send, what=what)
            except UNUSABLE_ANSWER_ERRORS as exc:
                self.usage.invalid_answers += 1
                problem = _problem(exc)
                continue
            except openai.APIStatusError as exc:
                detail = ("" if exc.status_code in (401, 403)
                          else f": {_scrub(str(exc.message), str(self.client.api_key))[:300]}")
                raise ReportFailed(f"{what} failed: the LLM API answered HTTP {exc.status_code}{detail}") from None
            except openai.APIError as exc:
                raise ReportFailed(f"{what} failed after {budget.used} request(s): {type(exc).__name__}: "
                                   f"{_scrub(str(exc.message), str(self.client.api_key))[:300]}") from None
            usage = completion.usage
            self._count(estimate, usage.prompt_tokens if usage else None, usage.completion_tokens if usage else 0)
            message = completion.choices[0].message if completion.choices else None
            if message is None or message.parsed is None:
                self.usage.invalid_answers += 1
                problem = f"the model refused: {message.refusal}" if message and message.refusal else "empty answer"
                continue
            try:
                return check(message.parsed)
            except _Unusable as exc:
                self.usage.invalid_answers += 1
                problem = str(exc)
        raise ReportFailed(f"{what} failed: no valid answer in {budget.used} attempt(s): {problem}")

    def _count(self, estimate: int, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        prompt = prompt_tokens if prompt_tokens else estimate
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion_tokens or 0
        self.usage.largest_prompt_tokens = max(self.usage.largest_prompt_tokens, prompt)


# ------------------------------------------------------------------------------ prompt helpers


def _messages(system: str, user: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _schema_tokens(answer_type: type[BaseModel]) -> int:
    return estimate_tokens(json.dumps(answer_type.model_json_schema(), ensure_ascii=False))


def _overhead(system: str, header: str, answer_type: type[BaseModel]) -> int:
    return estimate_tokens(system) + estimate_tokens(header) + 2 * 4 + 3 + _schema_tokens(answer_type) + 1


def _estimate(messages: Sequence[ChatCompletionMessageParam], answer_type: type[BaseModel]) -> int:
    text = sum(estimate_tokens(str(message.get("content") or "")) + 4 for message in messages)
    return text + 3 + _schema_tokens(answer_type)


def _theme_json(title: str, advice: str, calls: int) -> str:
    return json.dumps({"title": title, "advice": advice, "calls": calls}, ensure_ascii=False)


def _theme_body(theme: MergedTheme) -> str:
    return _theme_json(_clean(theme.title, _MAX_TITLE), _clean(theme.advice, _MAX_ADVICE), _calls(theme))


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} schema error(s): {validation_problems(exc, whole='answer')}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def actions_data(stats: ReportStats, problems: Sequence[Problem], admins: int = 15) -> dict[str, Any]:
    """What the actions prompt tells the LLM: the computed figures (percentages of the computed shares)."""
    hours = sorted(stats.missed_by_hour.hours, key=lambda h: (-h.missed, h.hour))[:5]
    return {
        "total_calls": stats.total_calls,
        "analysed_calls": stats.analysed_calls,
        "booking_conversion": {"call_types": stats.booking.call_types, "calls": stats.booking.eligible_calls,
                               "booked": stats.booking.booked_calls,
                               "percent": _percent(stats.booking.conversion)},
        "missed_opportunities": {"calls": stats.missed_opportunities.count,
                                 "of_calls": stats.missed_opportunities.eligible_calls,
                                 "percent": _percent(stats.missed_opportunities.share)},
        "missed_incoming_calls": {
            "incoming": stats.missed_by_hour.incoming, "missed": stats.missed_by_hour.missed,
            "percent": _percent(stats.missed_by_hour.missed_share),
            "worst_hours": [{"hour": f"{h.hour:02d}:00–{(h.hour + 1) % 24:02d}:00", "incoming": h.incoming,
                             "missed": h.missed, "percent": _percent(h.missed_share)} for h in hours if h.missed]},
        "administrators": [
            {"name": a.administrator or "не указан", "calls": a.calls, "analysed": a.analysed,
             "booked_percent": _percent(a.booked_share), "average_score": a.average_score,
             "weakest_criterion": a.weakest_criterion} for a in stats.administrators[:admins]],
        "problems": [{"rank": p.rank, "title": p.title, "advice": p.advice, "calls": p.calls,
                      "percent": _percent(p.share)} for p in problems],
    }


# ---------------------------------------------------------------------------- answer checking


def _map_themes(answer: RecommendationThemes, batch: Sequence[_Text]) -> list[tuple[str, str, Sequence[RecRef]]]:
    """Numbers outside the list are ignored, a number in two themes stays in the first, the numbers no
    theme took go to «Прочее». An answer assigning less than half of the numbers is not usable."""
    taken: set[int] = set()
    themes: list[tuple[str, str, Sequence[RecRef]]] = []
    for theme in answer.themes:
        numbers = [n for n in dict.fromkeys(theme.items) if 1 <= n <= len(batch) and n not in taken]
        if not numbers:
            continue
        taken.update(numbers)
        themes.append((_clean(theme.title, _MAX_TITLE) or OTHER_TITLE, _clean(theme.advice, _MAX_ADVICE),
                       [ref for n in numbers for ref in batch[n - 1].refs]))
    if len(taken) < _MIN_COVERAGE * len(batch):
        raise _Unusable(f"the answer assigned {len(taken)} of the {len(batch)} numbers to themes")
    rest = [ref for n, item in enumerate(batch, start=1) if n not in taken for ref in item.refs]
    if rest:
        themes.append((OTHER_TITLE, OTHER_ADVICE, rest))
    return themes


def _merge_themes(answer: MergedThemes, group: Sequence[MergedTheme]) -> list[MergedTheme]:
    """Members outside the list are ignored, a member in two themes stays in the first, a theme no merged
    theme took stays as it is. An answer without a single valid member is not usable."""
    taken: set[int] = set()
    merged: list[MergedTheme] = []
    for theme in answer.themes:
        numbers = [n for n in dict.fromkeys(theme.members) if 1 <= n <= len(group) and n not in taken]
        if not numbers:
            continue
        taken.update(numbers)
        members = [group[n - 1] for n in numbers]
        largest = max(members, key=_calls)
        refs = list(dict.fromkeys(ref for member in members for ref in member.refs))
        merged.append(MergedTheme(title=_clean(theme.title, _MAX_TITLE) or largest.title,
                                  advice=_clean(theme.advice, _MAX_ADVICE) or largest.advice, refs=refs))
    if not taken:
        raise _Unusable("no member number of the answer is in the list")
    merged.extend(theme for n, theme in enumerate(group, start=1) if n not in taken)
    return merged


def _actions(answer: ManagerActionsAnswer) -> ManagerActions:
    """The actions by priority (the order given breaks ties), at most five, numbered 1..n."""
    usable = [a for a in answer.actions if _clean(a.action)]
    ordered = sorted(usable, key=lambda a: a.priority)[:MAX_ACTIONS]
    summary = _clean(answer.summary, 2000)
    if not ordered or not summary:
        raise _Unusable("the answer has no summary or no action")
    return ManagerActions(summary=summary, actions=[
        Action(priority=number, action=_clean(a.action, 600), reason=_clean(a.reason, 600))
        for number, a in enumerate(ordered, start=1)])
