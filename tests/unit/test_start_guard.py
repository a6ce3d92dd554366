"""The clinic-level guard on starts: starts per hour (counted with the lock) and confirming a large force."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response
from botocore.exceptions import ClientError
from pydantic import ValidationError

from callsight.admin import main as admin_main
from callsight.dal.calls import CallRepository
from callsight.dal.clients import ClientProfile, ClientRepository
from callsight.dal.runs import ClientLock, RunRepository
from callsight.dal.starts import StartCounter, hour_of
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.errors import ConfirmationRequired, ProcessAlreadyRunning, TooManyStarts
from callsight.http import rest_api
from callsight.logic.pipeline import begin_step
from callsight.logic.runs import RunStarter
from callsight.logic.start_guard import StartLimits
from callsight.models import StartRequest
from callsight.processes import Process
from tests.clock import FakeClock
from tests.unit.test_runs import MACHINE, FakeStepFunctions

DAYS = DateRange(date(2026, 11, 1), date(2026, 11, 30))
OTHER_DAYS = DateRange(date(2026, 10, 1), date(2026, 10, 31))
LIMITS = StartLimits(starts_per_hour=3, force_confirm_calls=4)
HALF_PAST = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)


@pytest.fixture
def clinic(table: Table) -> str:
    ClientRepository(table).put(ClientProfile(client_id="clinic", amocrm_subdomain="clinic"))
    return "clinic"


def _clock(fake: FakeClock) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(fake(), UTC)


def _start_and_end(starter: RunStarter, client_id: str, process: str = "sync", days: DateRange = DAYS) -> str:
    """A start whose run ends at once (its lock released), so the next start finds the clinic free."""
    run = starter.start(client_id=client_id, process=process, days=days, state_machine_arn=MACHINE)
    assert ClientLock(starter.lock.table).release(client_id, run.execution_name)
    return run.execution_name


def test_the_start_over_the_hourly_limit_is_refused_and_changes_nothing(table: Table, clinic: str) -> None:
    sfn = FakeStepFunctions()
    starter = RunStarter(table, sfn, limits=LIMITS, clock=lambda: HALF_PAST)
    for process in ("sync", "transcribe", "pipeline"):  # every process counts
        _start_and_end(starter, clinic, process)
    counter = StartCounter(table)
    assert counter.count(clinic, hour_of(HALF_PAST)) == 3
    with pytest.raises(TooManyStarts) as refused:
        starter.start(client_id=clinic, process="analyze", days=OTHER_DAYS, state_machine_arn=MACHINE)
    assert refused.value.limit == 3 and refused.value.retry_after == 1800
    assert refused.value.retry_at == "2026-11-28T13:00:00Z"
    assert "clinic" in str(refused.value) and "3 starts per hour" in str(refused.value)
    # nothing taken: no lock, no run, no count, no execution
    assert ClientLock(table).holder(clinic) is None
    assert RunRepository(table).get(clinic, "analyze", OTHER_DAYS) is None
    assert counter.count(clinic, hour_of(HALF_PAST)) == 3
    assert len(sfn.executions) == 3


def test_a_start_refused_because_the_clinic_is_busy_is_not_counted(table: Table, clinic: str) -> None:
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    for _ in range(5):
        with pytest.raises(ProcessAlreadyRunning):
            starter.start(client_id=clinic, process="transcribe", days=DAYS, state_machine_arn=MACHINE)
    assert StartCounter(table).count(clinic, hour_of(HALF_PAST)) == 1


def test_the_count_begins_again_with_the_next_hour(table: Table, clinic: str) -> None:
    fake = FakeClock(datetime(2026, 11, 28, 12, 59, 0, tzinfo=UTC).timestamp())
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=_clock(fake))
    for _ in range(3):
        _start_and_end(starter, clinic)
    with pytest.raises(TooManyStarts) as refused:
        starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert refused.value.retry_after == 60 and refused.value.retry_at == "2026-11-28T13:00:00Z"
    fake.sleep(59.5)  # 12:59:59.5: still the same hour; the answer rounds the wait up
    with pytest.raises(TooManyStarts) as still:
        starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert still.value.retry_after == 1
    fake.sleep(0.5)  # 13:00:00
    for _ in range(3):
        _start_and_end(starter, clinic)
    with pytest.raises(TooManyStarts):
        starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    counter = StartCounter(table)
    assert counter.count(clinic, hour_of(_clock(fake)())) == 3
    assert counter.count(clinic, datetime(2026, 11, 28, 12, tzinfo=UTC)) == 3


def test_racing_starts_are_counted_exactly(table: Table, clinic: str) -> None:
    """The clinic's lock serialises starts; the count, in the lock's transaction, stays exact when they race."""
    limits = StartLimits(starts_per_hour=5, force_confirm_calls=LIMITS.force_confirm_calls)
    starter = RunStarter(table, FakeStepFunctions(), limits=limits, clock=lambda: HALF_PAST)
    started: list[str] = []
    refusals: list[type[Exception]] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        for _ in range(4):
            try:
                started.append(_start_and_end(starter, clinic))
            except (ProcessAlreadyRunning, TooManyStarts) as exc:
                refusals.append(type(exc))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(started) + len(refusals) == 32
    counter = StartCounter(table)
    assert counter.count(clinic, hour_of(HALF_PAST)) == len(started) <= 5
    while True:  # whatever the race left, the hour holds exactly the limit
        try:
            started.append(_start_and_end(starter, clinic))
        except TooManyStarts:
            break
    assert len(started) == 5 == counter.count(clinic, hour_of(HALF_PAST))


def test_a_clinic_may_have_its_own_hourly_limit(table: Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLSIGHT_TABLE_NAME", table.name)
    monkeypatch.setenv("CALLSIGHT_AMOCRM_SECRET_PREFIX", "callsight/test/amocrm/")
    token = tmp_path / "token.txt"
    token.write_text("a-token")
    register = ["register-client", "--client-id", "small", "--subdomain", "small", "--token-file", str(token)]
    assert admin_main([*register, "--starts-per-hour", "0"]) == 2
    assert "starts_per_hour" in capsys.readouterr().err
    assert admin_main([*register, "--starts-per-hour", "1"]) == 0
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    _start_and_end(starter, "small")
    with pytest.raises(TooManyStarts) as refused:
        starter.start(client_id="small", process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert refused.value.limit == 1


def test_a_start_whose_execution_could_not_start_gives_its_count_back(table: Table, clinic: str) -> None:
    class Broken(FakeStepFunctions):
        def start_execution(self, **kwargs: Any) -> dict[str, str]:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "x"}}, "StartExecution")

    starter = RunStarter(table, Broken(), limits=LIMITS, clock=lambda: HALF_PAST)
    for _ in range(5):  # more than the limit: none of them ran
        with pytest.raises(ClientError):
            starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert StartCounter(table).count(clinic, hour_of(HALF_PAST)) == 0


def test_the_pipeline_counts_once_its_steps_do_not(table: Table, clinic: str) -> None:
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    pipeline = starter.start(client_id=clinic, process="pipeline", days=DAYS, state_machine_arn=MACHINE)
    for step in (Process.SYNC, Process.TRANSCRIBE, Process.ANALYZE, Process.RECOMMENDATIONS):
        begin_step(table, client_id=clinic, process=step, days=DAYS, force=True,
                   pipeline_run_id=pipeline.execution_name, pipeline_execution_arn=None, state_machine_arn=MACHINE,
                   clock=lambda: HALF_PAST)
    assert StartCounter(table).count(clinic, hour_of(HALF_PAST)) == 1


def _stored(table: Table, client_id: str, process: str, count: int) -> None:
    CallRepository(table, client_id).insert_many(process, [
        {"call_id": f"leads-{i}", "day": f"2026-11-{1 + i % 28:02d}", f"{process}_status": "success"}
        for i in range(count)])


def test_force_over_the_threshold_needs_the_number_of_calls_confirmed(table: Table, clinic: str) -> None:
    _stored(table, clinic, "transcribe", 5)  # more than force_confirm_calls (4)
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    for confirm in (None, 4):
        with pytest.raises(ConfirmationRequired) as refused:
            starter.start(client_id=clinic, process="transcribe", days=DAYS, state_machine_arn=MACHINE, force=True,
                          confirm_calls=confirm)
        assert str(refused.value) == ("force re-runs 5 calls of clinic 2026-11-01..2026-11-30 (more than 4): "
                                      "send confirm_calls: 5 to go ahead")
        assert refused.value.calls == 5 and refused.value.confirmed == confirm
    assert ClientLock(table).holder(clinic) is None  # refused before anything was taken
    assert StartCounter(table).count(clinic, hour_of(HALF_PAST)) == 0
    _start_and_end(starter, clinic, "transcribe")  # without force nothing is asked
    run = starter.start(client_id=clinic, process="transcribe", days=DAYS, state_machine_arn=MACHINE, force=True,
                        confirm_calls=5)
    assert ClientLock(table).holder(clinic)["execution_name"] == run.execution_name  # type: ignore[index]


def test_force_counts_the_process_own_calls_and_the_pipeline_the_stored_ones(table: Table, clinic: str) -> None:
    _stored(table, clinic, "sync", 6)
    _stored(table, clinic, "analyze", 4)  # at the threshold: no confirmation
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    starter.start(client_id=clinic, process="analyze", days=DAYS, state_machine_arn=MACHINE, force=True)
    ClientLock(table).release(clinic, str(ClientLock(table).holder(clinic)["execution_name"]))  # type: ignore[index]
    for process in ("sync", "pipeline"):
        with pytest.raises(ConfirmationRequired) as refused:
            starter.start(client_id=clinic, process=process, days=DAYS, state_machine_arn=MACHINE, force=True)
        assert refused.value.calls == 6
    assert starter.start(client_id=clinic, process="pipeline", days=DAYS, state_machine_arn=MACHINE, force=True,
                         confirm_calls=6)


def test_a_start_without_force_reads_no_counters(table: Table, clinic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    starter = RunStarter(table, FakeStepFunctions(), limits=LIMITS, clock=lambda: HALF_PAST)
    assert starter.guard is not None

    def no_read(*args: Any, **kwargs: Any) -> dict[str, int]:
        raise AssertionError("a start without force read the day counters")

    monkeypatch.setattr(starter.guard.counters, "summed", no_read)
    _start_and_end(starter, clinic, "transcribe")
    with pytest.raises(AssertionError, match="read the day counters"):
        starter.start(client_id=clinic, process="transcribe", days=DAYS, state_machine_arn=MACHINE, force=True)


def test_taking_over_a_stale_lock_counts_the_start_once(table: Table, clinic: str) -> None:
    """The first try finds the lock held (nothing counted); the try after the takeover counts the start, once."""
    sfn = FakeStepFunctions()
    starter = RunStarter(table, sfn, limits=LIMITS, clock=lambda: HALF_PAST)
    counter = StartCounter(table)
    for taken in range(1, LIMITS.starts_per_hour + 1):
        run = starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
        sfn.executions[run.execution_arn]["status"] = "ABORTED"  # it ended without releasing: a stale lock
        assert counter.count(clinic, hour_of(HALF_PAST)) == taken
    with pytest.raises(TooManyStarts):  # the stale lock is no way around the limit
        starter.start(client_id=clinic, process="sync", days=DAYS, state_machine_arn=MACHINE)
    assert counter.count(clinic, hour_of(HALF_PAST)) == LIMITS.starts_per_hour
    assert len(sfn.executions) == LIMITS.starts_per_hour


@pytest.mark.parametrize("given", [True, False, "5", "true"])
def test_confirm_calls_is_a_number_not_true_or_a_string(given: Any) -> None:
    base = {"client_id": "clinic", "start_date": "2026-11-01", "end_date": "2026-11-30", "force": True}
    with pytest.raises(ValidationError) as refused:
        StartRequest.model_validate({**base, "confirm_calls": given})
    assert [e["loc"] for e in refused.value.errors()] == [("confirm_calls",)]
    assert StartRequest.model_validate({**base, "confirm_calls": 5}).confirm_calls == 5


def test_the_frontend_can_read_retry_after() -> None:
    """Retry-After is not a CORS-safelisted header: a browser script reads it only if the answer exposes it."""
    app = rest_api("https://front.example")

    @app.get("/api/refused")
    def refused() -> Response[Any]:
        raise TooManyStarts("clinic", 3, "2026-11-28T13:00:00Z", 1800)

    event = {"resource": "/api/refused", "path": "/api/refused", "httpMethod": "GET",
             "headers": {"Origin": "https://front.example"}, "multiValueHeaders": {"Origin": ["https://front.example"]},
             "queryStringParameters": None, "requestContext": {"stage": "prod", "httpMethod": "GET"},
             "body": None, "isBase64Encoded": False}
    answer = app.resolve(event, None)
    headers = {k.lower(): v for k, v in (answer.get("multiValueHeaders") or {}).items()}
    assert answer["statusCode"] == 429 and headers["retry-after"] == ["1800"]
    assert headers["access-control-allow-origin"] == ["https://front.example"]
    exposed = {name.strip().lower() for value in headers["access-control-expose-headers"] for name in value.split(",")}
    assert "retry-after" in exposed
