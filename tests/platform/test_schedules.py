"""infra.schedules: the template's Schedule events read, rate expressions checked, fired on their cadence."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra.schedules import ScheduleEmulator, rate_seconds, scheduled_event
from infra.template import ScheduleEvent, Template, TemplateError
from tests.platform.test_template import write_template


def test_the_token_refresh_runs_daily_from_the_template() -> None:
    template = Template()
    (schedule,) = [s for s in template.schedules if s.function == "RefreshTokensFunction"]
    assert rate_seconds(schedule.expression) == 86400 and schedule.enabled
    event = scheduled_event(schedule, region=template.region, account_id=template.account_id)
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"] == [f"arn:aws:events:{template.region}:{template.account_id}:rule/"
                                  f"{template.stack_name}-RefreshTokensFunctionKeepAlive"]


def test_schedule_properties_state_input_and_name(tmp_path: Path) -> None:
    path = write_template(tmp_path, """
Resources:
  Job:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn
      Handler: app.handler
      Events:
        Often: {Type: Schedule, Properties: {Schedule: rate(5 minutes), Name: often, Input: '{"x": 1}'}}
        Paused: {Type: Schedule, Properties: {Schedule: rate(1 hour), State: DISABLED}}
        Nightly: {Type: Schedule, Properties: {Schedule: "cron(0 3 * * ? *)", Enabled: false}}
""")
    by_name = {s.event_name: s for s in Template(path).schedules}
    assert by_name["Often"].rule_name == "often" and by_name["Often"].enabled
    assert scheduled_event(by_name["Often"]) == {"x": 1}
    assert not by_name["Paused"].enabled and not by_name["Nightly"].enabled


@pytest.mark.parametrize(("expression", "seconds"), [
    ("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800),
    ("cron(0 3 * * ? *)", None),
])
def test_rate_expressions(expression: str, seconds: float | None) -> None:
    assert rate_seconds(expression) == seconds


@pytest.mark.parametrize("expression", ["rate(1 days)", "rate(2 day)", "rate(0 minutes)", "rate(5 seconds)",
                                        "every day", "cron(0 3 * * ?)"])
def test_expressions_eventbridge_refuses_are_template_errors(expression: str) -> None:
    with pytest.raises(TemplateError):
        rate_seconds(expression)


def _schedule(expression: str, *, enabled: bool = True, name: str = "Tick") -> ScheduleEvent:
    return ScheduleEvent(function="Fn", event_name=name, expression=expression, rule_name=f"rule-{name}",
                         enabled=enabled)


def test_rate_schedules_fire_on_their_cadence_until_stopped() -> None:
    fired: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def deliver(function: str, event: Any) -> None:
        with lock:
            fired.append((function, event["resources"][0], time.monotonic()))

    # rate(1 minute) every 0.1 s; the disabled one and the cron one never fire by themselves
    emulator = ScheduleEmulator([_schedule("rate(1 minute)"), _schedule("rate(1 minute)", enabled=False, name="Off"),
                                 _schedule("cron(0 3 * * ? *)", name="Cron")], deliver, period_scale=1 / 600)
    started = time.monotonic()
    emulator.start()
    time.sleep(0.75)
    emulator.stop()
    count = len(fired)
    time.sleep(0.3)
    assert len(fired) == count  # nothing fires after stop
    assert 3 <= count <= 8, fired
    assert {rule for _, rule, _ in fired} == {"arn:aws:events:us-east-1:123456789012:rule/rule-Tick"}
    assert fired[0][2] - started >= 0.09  # the first one period after the start, as a new rule


def test_run_now_delivers_any_schedule_and_answers_what_the_handler_did() -> None:
    emulator = ScheduleEmulator([_schedule("cron(0 3 * * ? *)", enabled=False)],
                                lambda function, event: {"function": function, "type": event["detail-type"]})
    assert emulator.run_now("Fn") == {"function": "Fn", "type": "Scheduled Event"}
    with pytest.raises(KeyError, match="no schedule Other"):
        emulator.run_now("Other")


def test_sample_event_is_a_scheduled_event() -> None:
    sample = json.loads((Path(__file__).resolve().parents[2] / "events" / "refresh_tokens.json").read_text())
    generated = scheduled_event(_schedule("rate(1 day)"))
    assert set(sample) == set(generated) and sample["detail-type"] == generated["detail-type"]
