"""The local platform's Lambda limits: each function runs in containers of its own (worker processes) that are
killed, as Lambda kills an execution environment, past the function's Timeout or MemorySize; every invocation
is reported (Lambda's REPORT line, the memory peak); a stop kills what still runs.

Handlers are throwaway modules under tmp paths (as in test_local_aws.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from infra.aws import LocalAws
from infra.lambdas import FunctionLimits, HandlerSpec, LambdaDispatcher
from tests.platform.test_local_aws import ACCOUNT, fn_arn, wait_for, write_handlers

TIMEOUT_S = 1.5
MEMORY_MB = 256
#: how much later than its timeout a killed invocation may answer (a loaded 2-core machine)
KILL_SLACK_S = 3.0

HANDLERS = {
    "Sleepy": """
        import os, time

        def lambda_handler(event, context):
            if event.get("pid_file"):
                open(event["pid_file"], "w").write(str(os.getpid()))
            time.sleep(event.get("sleep", 0))
            return {"pid": os.getpid(), "remaining": context.get_remaining_time_in_millis()}
    """,
    "Hog": """
        import os, subprocess, sys, time

        def lambda_handler(event, context):
            if event.get("child_mb"):  # the memory is the handler's child's (as ffmpeg's would be)
                subprocess.run([sys.executable, "-c", f"import time; x = b'1' * ({event['child_mb']} << 20); "
                                "time.sleep(10)"], check=True)
            data = b"1" * (event.get("mb", 0) << 20)  # every page written: resident
            time.sleep(event.get("hold", 0))
            return {"pid": os.getpid(), "bytes": len(data)}
    """,
    "Exits": """
        import os

        def lambda_handler(event, context):
            os._exit(3)
    """,
    "Guarded": """
        import os, tempfile
        import boto3

        def lambda_handler(event, context):
            try:
                boto3.client("s3", endpoint_url="https://s3.eu-central-1.amazonaws.com").list_buckets()
                outcome = "sent"
            except Exception as exc:
                outcome = type(exc).__name__
            names = ("AWS_ACCESS_KEY_ID", "CALLSIGHT_ONLY_MINE", "AWS_LAMBDA_FUNCTION_NAME",
                     "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_PROFILE")
            return {"outcome": outcome, "cwd": os.getcwd(), "env": {n: os.environ.get(n) for n in names},
                    "tmp": tempfile.gettempdir()}
    """,
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_handlers(tmp_path_factory, "limited", HANDLERS)


def spec(root: Path, name: str, **extra: Any) -> HandlerSpec:
    return HandlerSpec(logical_id=name, code_dir=root / name, handler="app.lambda_handler",
                       **{"timeout_s": TIMEOUT_S, "memory_mb": MEMORY_MB, **extra})


@pytest.fixture
def dispatcher(root: Path) -> Iterator[LambdaDispatcher]:
    dispatcher = LambdaDispatcher({name: spec(root, name) for name in HANDLERS})
    try:
        yield dispatcher
    finally:
        dispatcher.unload()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_warm_container_is_reused_and_one_past_its_timeout_is_killed(dispatcher: LambdaDispatcher) -> None:
    cold = dispatcher.invoke("Sleepy", {})
    warm = dispatcher.invoke("Sleepy", {})
    assert not cold.error and not warm.error
    pid = cold.payload["pid"]
    assert warm.payload["pid"] == pid  # the same container served both
    assert 0 < warm.payload["remaining"] <= TIMEOUT_S * 1000
    started = time.monotonic()
    timed_out = dispatcher.invoke("Sleepy", {"sleep": 60})
    elapsed = time.monotonic() - started
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + KILL_SLACK_S
    assert timed_out.error and timed_out.payload["errorType"] == "Sandbox.Timedout"
    reports = dispatcher.reports("Sleepy")
    assert timed_out.payload["errorMessage"] == (f"RequestId: {reports[-1].request_id} Error: Task timed out "
                                                 f"after {TIMEOUT_S:.2f} seconds")
    assert gone(pid)
    again = dispatcher.invoke("Sleepy", {})
    assert not again.error and again.payload["pid"] != pid  # a new container: a cold start
    outcomes = [(r.outcome, r.init_duration_ms is not None) for r in dispatcher.reports("Sleepy")]
    assert outcomes == [("success", True), ("success", False), ("timeout", False), ("success", True)]


def test_memory_past_the_limit_kills_the_container_and_the_peak_is_reported(dispatcher: LambdaDispatcher) -> None:
    baseline = dispatcher.invoke("Hog", {})
    assert not baseline.error
    base_mb = dispatcher.reports("Hog")[-1].max_memory_used_mb
    assert 5 < base_mb < MEMORY_MB - 150, base_mb
    held = dispatcher.invoke("Hog", {"mb": 150, "hold": 0.2})
    assert not held.error and held.payload["pid"] == baseline.payload["pid"]
    peak = dispatcher.reports("Hog")[-1]
    assert 150 <= peak.max_memory_used_mb <= base_mb + 200, (base_mb, peak)
    assert peak.memory_size_mb == MEMORY_MB and peak.outcome == "success"
    small = dispatcher.invoke("Hog", {"mb": 1})
    assert dispatcher.reports("Hog")[-1].max_memory_used_mb < peak.max_memory_used_mb - 100  # reset per invocation
    assert small.payload["pid"] == baseline.payload["pid"]

    killed = dispatcher.invoke("Hog", {"mb": MEMORY_MB + 100, "hold": 5})
    assert killed.error and killed.payload["errorType"] == "Runtime.OutOfMemory"
    report = dispatcher.reports("Hog")[-1]
    assert killed.payload["errorMessage"] == (f"RequestId: {report.request_id} Error: Runtime exited with error: "
                                              "signal: killed")
    assert report.outcome == "out_of_memory" and report.duration_ms < 5000
    assert gone(baseline.payload["pid"])


def test_the_memory_of_the_handlers_children_counts(dispatcher: LambdaDispatcher) -> None:
    started = time.monotonic()
    killed = dispatcher.invoke("Hog", {"child_mb": MEMORY_MB})
    assert killed.error and killed.payload["errorType"] == "Runtime.OutOfMemory", killed.payload
    assert time.monotonic() - started < 8  # the child would sleep 10 s: it was killed with its container
    assert not [p for p in psutil.process_iter(["cmdline"]) if "time.sleep(10)" in " ".join(p.info["cmdline"] or [])
                and not gone(p.pid)]


def test_a_container_that_exits_is_an_exit_error(dispatcher: LambdaDispatcher) -> None:
    result = dispatcher.invoke("Exits", {})
    assert result.error and result.payload["errorType"] == "Runtime.ExitError"
    assert result.payload["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")
    assert dispatcher.reports("Exits")[-1].outcome == "exit"


def test_each_invocation_logs_lambdas_report_line(dispatcher: LambdaDispatcher,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="infra.lambdas"):
        dispatcher.invoke("Sleepy", {})
        dispatcher.invoke("Sleepy", {"sleep": 60})
    first, second = dispatcher.reports("Sleepy")[-2:]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("REPORT ")]
    assert lines == [first.line(), second.line()]
    fields = dict(part.split(": ", 1) for part in lines[0].split("\t"))
    assert fields["REPORT RequestId"] == first.request_id
    assert fields["Memory Size"] == f"{MEMORY_MB} MB" and fields["Max Memory Used"].endswith(" MB")
    assert float(fields["Duration"].removesuffix(" ms")) == pytest.approx(first.duration_ms, abs=0.01)
    assert int(fields["Billed Duration"].removesuffix(" ms")) >= first.duration_ms
    assert "Init Duration" in fields and "Status" not in fields
    assert lines[1].endswith("\tStatus: timeout") and "Init Duration" not in lines[1]


def test_overlapping_invocations_get_containers_of_their_own_up_to_the_cap(root: Path) -> None:
    dispatcher = LambdaDispatcher({"Sleepy": spec(root, "Sleepy", timeout_s=30)}, max_containers=2)
    pids: list[int] = []
    try:
        dispatcher.invoke("Sleepy", {})  # one warm container first
        workers = [threading.Thread(target=lambda: pids.append(dispatcher.invoke("Sleepy", {"sleep": 1})
                                                                .payload["pid"])) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        dispatcher.unload()
    assert len(pids) == 4 and len(set(pids)) == 2  # four at once, two containers: two of them waited


def test_a_container_reaches_no_aws_beyond_loopback_and_sees_its_functions_environment(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    dispatcher = LambdaDispatcher({"Guarded": spec(root, "Guarded", timeout_s=30, function_name="guarded-fn",
                                                   environment={"CALLSIGHT_ONLY_MINE": "yes"})})
    try:
        result = dispatcher.invoke("Guarded", {})
        tmp = Path(result.payload["tmp"])
        assert tmp.is_dir() and tmp != Path(tempfile.gettempdir())  # a /tmp of its own, as a Lambda sandbox has
    finally:
        dispatcher.unload()
    assert not tmp.exists()  # gone with the container
    assert not result.error, result.payload
    assert result.payload["outcome"] == "RealAwsRefused"
    assert result.payload["cwd"] == str(root / "Guarded")  # CodeUri, as /var/task on Lambda
    assert result.payload["env"] == {"AWS_ACCESS_KEY_ID": "testing", "CALLSIGHT_ONLY_MINE": "yes",
                                     "AWS_LAMBDA_FUNCTION_NAME": "guarded-fn",
                                     "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB), "AWS_PROFILE": None}


def test_drain_kills_a_stuck_handler(root: Path, tmp_path: Path) -> None:
    dispatcher = LambdaDispatcher({"Sleepy": spec(root, "Sleepy", timeout_s=300)})
    pid_file = tmp_path / "pid"
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(dispatcher.invoke(
        "Sleepy", {"sleep": 600, "pid_file": str(pid_file)})))
    worker.start()
    try:
        wait_for(pid_file.exists, timeout=30)
        started = time.monotonic()
        assert dispatcher.drain(0.5) == 1
        assert time.monotonic() - started < 0.5 + KILL_SLACK_S
        worker.join(timeout=10)
        assert gone(int(pid_file.read_text()))
        assert answers and answers[0].error and answers[0].payload["errorType"] == "Runtime.ExitError"
        assert "the local platform stopped" in answers[0].payload["errorMessage"]
        assert dispatcher.invoke("Sleepy", {}).payload["errorType"] == "PlatformStopping"
    finally:
        dispatcher.unload()


def test_step_functions_retry_and_catch_a_timeout_by_its_error_type(root: Path) -> None:
    local = LocalAws()
    local.start()
    dispatcher = LambdaDispatcher({"Sleepy": spec(root, "Sleepy", timeout_s=60)},
                                  function_limits={"Sleepy": FunctionLimits(timeout_s=TIMEOUT_S)})
    dispatcher.install()
    try:
        sfn = local.client("stepfunctions")
        definition = {"StartAt": "Slow", "States": {
            "Slow": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                     "Parameters": {"FunctionName": fn_arn("Sleepy"), "Payload": {"sleep": 60}},
                     "Retry": [{"ErrorEquals": ["Sandbox.Timedout"], "IntervalSeconds": 1, "MaxAttempts": 1}],
                     "Catch": [{"ErrorEquals": ["Sandbox.Timedout"], "ResultPath": "$.caught", "Next": "Done"}],
                     "End": True},
            "Done": {"Type": "Pass", "End": True}}}
        machine = sfn.create_state_machine(name="times-out", definition=json.dumps(definition),
                                           roleArn=f"arn:aws:iam::{ACCOUNT}:role/test")["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        described = wait_for(lambda: (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING"
                             and d, timeout=60)
    finally:
        dispatcher.uninstall()
        dispatcher.unload()
        local.stop()
    assert described["status"] == "SUCCEEDED", described
    caught = json.loads(described["output"])["caught"]
    assert caught["Error"] == "Sandbox.Timedout" and "Task timed out after 1.50 seconds" in caught["Cause"]
    assert [r.outcome for r in dispatcher.reports("Sleepy")] == ["timeout", "timeout"]  # tried, retried once
