"""How we ask chat models, in one place: the parameters each model family takes, and the budget of
requests one structured answer may use. The analysis and the report build their requests from here.

Parameters (OpenAI's model pages and the ``reasoning_effort`` notes of the installed ``openai`` package):

- reasoning families (``gpt-5`` and every later generation, ``o1``/``o3``/``o4`` and their dated snapshots)
  refuse a ``temperature`` other than the default (and ``max_tokens``, which we never send): we send none.
  They take ``reasoning_effort``; ``low`` is what a scoring rubric needs (the default, ``medium``, costs
  more reasoning tokens for the same answer) and every such family takes it, except the ``-pro`` models
  (their own fixed effort), the ``-chat`` aliases and the retired ``o1-mini``/``o1-preview``: those get
  neither parameter;
- ``gpt-4.1``, ``gpt-4o`` and older take a ``temperature`` (the analysis sends 0: the same transcript gets
  the same scores; the report keeps the default for its wording);
- a name we do not know (a self-hosted OpenAI-compatible server's model: ``qwen2.5-72b-instruct``...) is
  treated like the latter: such servers take ``temperature``.

A gateway's ``openai/gpt-5.4-mini`` and a fine-tune's ``ft:gpt-4.1-mini:org::id`` follow their base model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, TypedDict, TypeVar

import openai
from openai.types.shared.reasoning_effort import ReasoningEffort
from pydantic import ValidationError

from callsight.llm import RetryPolicy, with_retries

T = TypeVar("T")

#: what we send a reasoning model that takes it (see the module's notes)
REASONING_EFFORT: Final[ReasoningEffort] = "low"

_REASONING: Final = re.compile(r"^(?:o\d|gpt-(?:[5-9]|\d{2,}))(?:$|[.-])")
_NO_EFFORT: Final = re.compile(r"^o1-(?:mini|preview)|-pro(?:$|-)|-chat(?:$|-)")


class ChatOptions(TypedDict, total=False):
    """The keyword arguments a model's family takes, for ``client.chat.completions.parse(**options)``."""

    temperature: float
    reasoning_effort: ReasoningEffort


@dataclass(frozen=True)
class ChatModelRules:
    """What one model takes: ``takes_temperature`` (not a reasoning family) and the ``reasoning_effort``
    to send (``None``: not sent)."""

    model: str
    takes_temperature: bool
    reasoning_effort: ReasoningEffort | None

    def options(self, *, temperature: float | None = None) -> ChatOptions:
        """The keyword arguments to send: ``temperature`` (``None``: the model's default) where the family
        takes one, the reasoning effort where it takes that."""
        options = ChatOptions()
        if temperature is not None and self.takes_temperature:
            options["temperature"] = temperature
        if self.reasoning_effort is not None:
            options["reasoning_effort"] = self.reasoning_effort
        return options


def base_name(model: str) -> str:
    """The OpenAI model a name stands for: ``openai/gpt-5.4-mini`` -> ``gpt-5.4-mini``,
    ``ft:gpt-4.1-mini:org::id`` -> ``gpt-4.1-mini``; lower case."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name.rsplit("/", 1)[-1]


def chat_model_rules(model: str) -> ChatModelRules:
    """The rules of ``model``'s family (see the module's notes); an unknown name takes a temperature."""
    name = base_name(model)
    if not _REASONING.match(name):
        return ChatModelRules(model=model, takes_temperature=True, reasoning_effort=None)
    effort = None if _NO_EFFORT.search(name) else REASONING_EFFORT
    return ChatModelRules(model=model, takes_temperature=False, reasoning_effort=effort)


def chat_options(model: str, *, temperature: float | None = None) -> ChatOptions:
    """The keyword arguments to send ``model`` besides the messages and the response format: ``temperature``
    only where its family takes one."""
    return chat_model_rules(model).options(temperature=temperature)


#: a well-formed answer that cannot be used (it fails the schema, it was cut at the length limit or filtered), or a
#: truncated JSON body the retries did not outlast: the caller asks again within its budget
UNUSABLE_ANSWER_ERRORS: tuple[type[Exception], ...] = (
    ValidationError, ValueError, openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError)


@dataclass
class RequestBudget:
    """One budget of requests for one answer: ``attempts`` requests in all, whatever went wrong.

    :meth:`request` sends one request through :func:`callsight.llm.with_retries`, so an unreadable 200
    (truncated or invalid JSON) or a connection the OpenAI client gave up on is sent again after
    ``retry``'s backoff (with jitter, capped) while the budget lasts; the caller asks again at once, within
    the same budget, when a well-formed answer is unusable (it fails the schema, the model refused). The
    OpenAI client's own retries of 408/409/429/5xx (``max_retries``) are inside one request. ``used``
    counts the requests sent.
    """

    attempts: int
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    used: int = 0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    @property
    def left(self) -> int:
        return self.attempts - self.used

    def request(self, call: Callable[[], T], *, what: str) -> T:
        """``call()`` (one request), sent again after a transient error while requests are left; the last
        error propagates. Needs at least one request left."""
        if self.left < 1:
            raise RuntimeError("no request left in the budget")

        def counted() -> T:
            self.used += 1
            return call()

        return with_retries(counted, policy=replace(self.retry, attempts=self.left), what=what, sleep=self.sleep)
