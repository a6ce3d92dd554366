"""The chat models' rules (which parameters each family takes) and the one budget of requests per answer;
the report's requests against the stub OpenAI through the official client."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from callsight.analysis.chat_models import REASONING_EFFORT, RequestBudget, base_name, chat_model_rules, chat_options
from callsight.config import DEFAULT_ANALYSIS_MODEL, AnalyzeCallsConfig, ThemeCallsConfig
from callsight.llm import RetryPolicy
from callsight.report.errors import ReportFailed
from callsight.report.models import Recommendation
from callsight.report.themes import ThemeWriter
from infra.stubs.openai import OpenAIStub

FAST = RetryPolicy(base_delay=0.01, max_delay=0.02)


@pytest.mark.parametrize("model", [
    "gpt-5.4-mini", "gpt-5.4-mini-2026-03-17", "gpt-5.5", "gpt-5", "gpt-5-nano", "gpt-5.1-codex", "gpt-6-luna",
    "gpt-6.1-sol", "o1", "o3", "o3-mini-2025-01-31", "o4-mini", "openai/gpt-5.4-mini", "GPT-5.4-Mini"])
def test_reasoning_families_get_no_temperature_and_a_low_effort(model: str) -> None:
    rules = chat_model_rules(model)
    assert not rules.takes_temperature
    assert chat_options(model, temperature=0.0) == {"reasoning_effort": REASONING_EFFORT}


@pytest.mark.parametrize("model", ["gpt-5.2-pro", "gpt-5.2-pro-2025-12-11", "gpt-5-chat-latest",
                                   "gpt-5.3-chat-latest", "o1-mini", "o1-preview-2024-09-12"])
def test_reasoning_models_with_their_own_effort_get_neither_parameter(model: str) -> None:
    assert chat_options(model, temperature=0.0) == {}


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "gpt-4o", "gpt-4o-mini",
                                   "gpt-4-turbo", "gpt-3.5-turbo", "chatgpt-4o-latest", "ft:gpt-4.1-mini:clinic::a1",
                                   "qwen2.5-72b-instruct", "llama-3.3-70b", "gpt-oss-120b", "omni-local"])
def test_other_and_unknown_models_take_a_temperature(model: str) -> None:
    assert chat_model_rules(model).takes_temperature
    assert chat_options(model, temperature=0.0) == {"temperature": 0.0}
    assert chat_options(model) == {}  # no temperature asked: the model's default, nothing sent


def test_base_names() -> None:
    assert base_name(" openai/GPT-5.4-mini ") == "gpt-5.4-mini"
    assert base_name("ft:gpt-4.1-mini:clinic::abc123") == "gpt-4.1-mini"
    assert base_name("my-local-model") == "my-local-model"


def _shutdown_dates() -> dict[str, str]:
    """Model -> announced shutdown date, from the installed openai package's deprecation notes."""
    source = (Path(openai.__file__).parent / "types" / "shared" / "chat_model.py").read_text()
    if "Deprecated values:" not in source:
        pytest.skip(f"openai {openai.__version__} has no deprecation notes (the locked version has)")
    notes = source.split("Deprecated values:", 1)[1]
    dates: dict[str, str] = {}
    for entry in re.split(r"\n- ", notes):
        date = re.search(r"shutdown date:\s*(\d{4}-\d{2}-\d{2})", entry)
        for name in re.findall(r'"([^"]+)"', entry.split(":", 1)[0] if date else entry):
            dates[name] = date.group(1) if date else "not supported"
    return dates


def test_the_default_model_has_no_announced_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    dates = _shutdown_dates()
    assert dates["gpt-4.1-mini"] == "2027-01-14"  # the notes are read (the old default is in them)
    assert DEFAULT_ANALYSIS_MODEL not in dates
    for name in ("TABLE_NAME", "BUCKET", "OPENAI_API_KEY_SECRET"):
        monkeypatch.setenv(f"CALLSIGHT_{name}", "x")
    for config in (AnalyzeCallsConfig, ThemeCallsConfig):
        monkeypatch.delenv("CALLSIGHT_ANALYSIS_MODEL", raising=False)
        assert config().analysis_model == DEFAULT_ANALYSIS_MODEL
        monkeypatch.setenv("CALLSIGHT_ANALYSIS_MODEL", " ")  # a template parameter left blank
        assert config().analysis_model == DEFAULT_ANALYSIS_MODEL
        monkeypatch.setenv("CALLSIGHT_ANALYSIS_MODEL", "gpt-5.5")
        assert config().analysis_model == "gpt-5.5"


# ------------------------------------------------------------------------------ the budget


def test_a_transient_error_is_sent_again_within_the_budget_with_growing_waits() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise json.JSONDecodeError("Expecting value", "{", 1)
        return "answer"

    budget = RequestBudget(4, retry=RetryPolicy(base_delay=1.0, max_delay=1.5), sleep=waits.append)
    assert budget.request(flaky, what="test") == "answer"
    assert budget.used == 3 and budget.left == 1
    assert len(waits) == 2 and 1.0 <= waits[0] <= 1.25 and 1.5 <= waits[1] <= 1.875  # doubled, capped, jittered


def test_the_budget_is_shared_by_the_requests_of_one_answer() -> None:
    budget = RequestBudget(3, retry=FAST)

    def broken() -> str:
        raise json.JSONDecodeError("Expecting value", "{", 1)

    assert budget.request(lambda: "an answer failing the schema", what="test")  # the caller asks again...
    with pytest.raises(json.JSONDecodeError):
        budget.request(broken, what="test")  # ...within what is left: 2 requests
    assert budget.used == 3 and budget.left == 0
    with pytest.raises(RuntimeError, match="no request left"):
        budget.request(lambda: "x", what="test")


def test_a_permanent_error_is_not_sent_again() -> None:
    budget = RequestBudget(4, retry=FAST)

    def refused() -> str:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        budget.request(refused, what="test")
    assert budget.used == 1


# ------------------------------------------------------------------------------ the report's requests


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(stub: OpenAIStub) -> Iterator[None]:
    stub.configure(fault_rate=0, fault_kinds=["429", "500", "timeout", "invalid_json"], timeout_seconds=5.0)
    yield
    stub.configure(fault_rate=0, timeout_seconds=5.0)


def _scripted_client(stub: OpenAIStub, faults: list[str | None], sent: list[dict[str, Any]],
                     timeout: float = 10) -> openai.OpenAI:
    """The official client (no retries of its own) whose n-th request meets the stub's n-th fault (None: none)."""
    plan = iter(faults)

    def before(request: httpx.Request) -> None:
        fault = next(plan, None)
        stub.configure(fault_rate=1.0 if fault else 0.0, fault_kinds=[fault or "500"])
        sent.append(json.loads(request.read()))

    return openai.OpenAI(api_key=stub.api_key, base_url=stub.base_url, max_retries=0, timeout=timeout,
                         http_client=httpx.Client(event_hooks={"request": [before]}))


def _recs() -> list[Recommendation]:
    return [Recommendation(call_id="leads-1", position=0, text="Предлагайте запись на приём."),
            Recommendation(call_id="leads-2", position=0, text="Называйте имя и клинику.")]


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-5.4-mini", {"reasoning_effort": "low"}), ("gpt-4.1-mini", {})])
def test_the_report_sends_what_the_models_family_takes(stub: OpenAIStub, model: str,
                                                       expected: dict[str, Any]) -> None:
    sent: list[dict[str, Any]] = []
    chunk = ThemeWriter(_scripted_client(stub, [], sent), model=model).theme_chunk(_recs())
    assert chunk.themes and sent[-1]["model"] == model
    assert {k: sent[-1][k] for k in ("temperature", "reasoning_effort") if k in sent[-1]} == expected


def test_the_report_outlasts_connections_lost_and_unusable_answers(stub: OpenAIStub) -> None:
    stub.configure(timeout_seconds=2.0)  # the stub holds a "timeout" request longer than the client waits
    sent: list[dict[str, Any]] = []
    writer = ThemeWriter(_scripted_client(stub, ["timeout", "invalid_json", "timeout"], sent, timeout=0.3),
                         model=DEFAULT_ANALYSIS_MODEL, attempts=4, retry=FAST)
    chunk = writer.theme_chunk(_recs())
    assert chunk.themes and len(sent) == writer.usage.requests == 4
    assert writer.usage.invalid_answers == 1  # the broken answer; the lost connections were sent again

    sent.clear()
    writer = ThemeWriter(_scripted_client(stub, ["timeout"] * 3, sent, timeout=0.3), model=DEFAULT_ANALYSIS_MODEL,
                         attempts=3, retry=FAST)
    with pytest.raises(ReportFailed, match=r"after 3 request\(s\): APITimeoutError"):
        writer.theme_chunk(_recs())
    assert len(sent) == 3
