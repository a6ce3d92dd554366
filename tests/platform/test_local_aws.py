"""Embedded AWS and the platform: moto resources from the template, atomic DynamoDB, Lambda dispatch to
per-function containers (directly, through boto3 and through Step Functions), EventBridge emulation,
LocalPlatform and ``python -m infra.serve``. The containers' limits and reports: test_limits.py.

Handlers here are throwaway modules written under tmp paths: these tests prove the machinery, not the
business logic of functions/*.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest

from callsight.access import new_api_key, parse_api_key
from callsight.processes import Process
from infra.aws import LocalAws, item_operation_json
from infra.events import ExecutionEventWatcher, execution_status_event, matches
from infra.lambdas import (
    FunctionError,
    FunctionLimits,
    FunctionNotFound,
    HandlerSpec,
    LambdaDispatcher,
)
from infra.template import EventRule, Template, load_state_machine_definitions

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
EmbeddedAws = tuple[LocalAws, Template, LambdaDispatcher]


def fn_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def write_handler(root: Path, name: str, source: str, module: str = "app") -> Path:
    """functions/<name>/<module>.py under ``root``; every function's module is called app.py, as in the repo."""
    code_dir = root / name
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return code_dir


def write_handlers(tmp_path_factory: pytest.TempPathFactory, name: str, handlers: dict[str, str]) -> Path:
    """A fresh directory holding one function per ``handlers`` entry (logical id -> its app.py source)."""
    root = tmp_path_factory.mktemp(name)
    for function, source in handlers.items():
        write_handler(root, function, source)
    return root


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


HANDLERS = {
    "Echo": """
        import os
        IMPORTS = globals().get("IMPORTS", 0) + 1
        TABLE_AT_IMPORT = os.environ.get("CALLSIGHT_TABLE_NAME")
        CALLS = []

        def lambda_handler(event, context):
            CALLS.append(1)
            return {"event": event, "imports": IMPORTS, "calls": len(CALLS), "module": __name__,
                    "pid": os.getpid(), "table_at_import": TABLE_AT_IMPORT,
                    "context": {"function_name": context.function_name,
                                "memory_limit_in_mb": context.memory_limit_in_mb,
                                "invoked_function_arn": context.invoked_function_arn,
                                "aws_request_id": context.aws_request_id,
                                "log_group_name": context.log_group_name,
                                "remaining": context.get_remaining_time_in_millis()}}
    """,
    "Other": """
        import os

        def lambda_handler(event, context):
            return {"module": __name__, "which": "other", "pid": os.getpid()}
    """,
    "Boom": """
        class BoomError(Exception):
            pass

        def lambda_handler(event, context):
            raise BoomError("it went boom: " + str(event.get("why", "")))
    """,
    "Flaky": """
        ATTEMPTS = {}

        class Flaky(Exception):
            pass

        def lambda_handler(event, context):
            key = event["key"]
            ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
            if ATTEMPTS[key] < 2:
                raise Flaky(f"attempt {ATTEMPTS[key]} of {key} fails")
            return {"attempts": ATTEMPTS[key]}
    """,
    "NotJson": """
        def lambda_handler(event, context):
            return {"when": object()}
    """,
    "Recorder": """
        def lambda_handler(event, context):
            return {"status": event["detail"]["status"]}
    """,
}


@pytest.fixture(scope="module")
def handler_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_handlers(tmp_path_factory, "functions", HANDLERS)


def make_dispatcher(root: Path, **extra: HandlerSpec) -> LambdaDispatcher:
    specs: dict[str, HandlerSpec | tuple[str | Path, str]] = {
        name: HandlerSpec(logical_id=name, code_dir=root / name, handler="app.lambda_handler", timeout_s=60,
                          memory_mb=256) for name in HANDLERS}
    specs.update(extra)
    return LambdaDispatcher(specs)


# ---------------------------------------------------------------------------------------- EventBridge patterns
def test_pattern_exact_values_and_nested_objects() -> None:
    event = {"source": "aws.states", "detail-type": "X", "detail": {"status": "FAILED", "n": 3, "tags": ["a", "b"]}}
    assert matches({"source": ["aws.states"]}, event)
    assert matches({"source": ["other", "aws.states"], "detail": {"status": ["ABORTED", "FAILED"]}}, event)
    assert not matches({"source": ["aws.states"], "detail": {"status": ["SUCCEEDED"]}}, event)
    assert not matches({"detail": {"missing": ["x"]}}, event)
    assert not matches({"detail": {"status": {"nested": ["FAILED"]}}}, event)
    assert matches({"detail": {"n": [3.0]}}, event)
    assert matches({"detail": {"tags": ["b"]}}, event)  # an array matches if any element does
    assert matches({}, event)


def test_pattern_content_filters() -> None:
    event = {"detail": {"status": "TIMED_OUT", "name": "run-42"}}
    assert matches({"detail": {"name": [{"prefix": "run-"}]}}, event)
    assert matches({"detail": {"name": [{"suffix": "-42"}]}}, event)
    assert matches({"detail": {"status": [{"anything-but": ["SUCCEEDED"]}]}}, event)
    assert not matches({"detail": {"status": [{"anything-but": "TIMED_OUT"}]}}, event)
    assert matches({"detail": {"error": [{"exists": False}]}}, event)
    assert not matches({"detail": {"name": [{"exists": False}]}}, event)
    with pytest.raises(ValueError, match="wildcard"):
        matches({"detail": {"name": [{"wildcard": "*"}]}}, event)


def _fake_execution(status: str, machine_arn: str) -> SimpleNamespace:
    from datetime import UTC, datetime

    return SimpleNamespace(
        execution_arn=machine_arn.replace(":stateMachine:", ":execution:") + ":run-1", state_machine_arn=machine_arn,
        name="run-1", status=status, start_date=datetime(2026, 1, 1, tzinfo=UTC),
        stop_date=datetime(2026, 1, 1, 0, 1, tzinfo=UTC), input_data={"client_id": "demo"},
        output={"done": True}, error="SyncFailed" if status == "FAILED" else None, cause=None)


def test_status_change_event_shape_and_the_templates_rule() -> None:
    template = Template()
    machine = next(iter(template.state_machines.values()))
    event = execution_status_event(_fake_execution("FAILED", machine.arn))
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
                          "detail"}
    assert (event["source"], event["detail-type"]) == ("aws.states", "Step Functions Execution Status Change")
    assert event["resources"] == [event["detail"]["executionArn"]]
    assert event["time"] == "2026-01-01T00:01:00Z"
    detail = event["detail"]
    assert {"executionArn", "stateMachineArn", "name", "status", "startDate", "stopDate", "input", "output",
            "error", "cause"} <= set(detail)
    assert json.loads(detail["input"]) == {"client_id": "demo"}
    assert detail["output"] is None and detail["error"] == "SyncFailed"
    assert detail["startDate"] == 1767225600000 and detail["stopDate"] == 1767225660000
    succeeded = execution_status_event(_fake_execution("SUCCEEDED", machine.arn))
    assert json.loads(succeeded["detail"]["output"]) == {"done": True}

    rules = template.event_rules
    assert rules, "the template has an EventBridgeRule"
    for rule in rules:
        for status in ("ABORTED", "TIMED_OUT", "FAILED", "SUCCEEDED"):
            in_pattern = status in json.dumps(rule.pattern["detail"]["status"])
            assert matches(rule.pattern, execution_status_event(_fake_execution(status, machine.arn))) == in_pattern
        other = machine.arn + "-other"
        assert not matches(rule.pattern, execution_status_event(_fake_execution("FAILED", other)))


# ---------------------------------------------------------------------------------------- dispatcher (no moto)
def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_dispatcher_runs_each_function_in_containers_of_its_own(handler_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSIGHT_TABLE_NAME", "table-at-import")
    dispatcher = make_dispatcher(handler_root)
    try:
        first = dispatcher.invoke("Echo", {"n": 1})
        second = dispatcher.invoke(fn_arn("Echo") + ":$LATEST", {"n": 2})
        other = dispatcher.invoke(f"{ACCOUNT}:function:Other", {})
        assert not first.error and first.payload["event"] == {"n": 1}
        assert (second.payload["imports"], second.payload["calls"]) == (1, 2)  # imported once, the container reused
        assert first.payload["pid"] == second.payload["pid"] != other.payload["pid"] != os.getpid()
        assert first.payload["module"] == "app"  # imported as Lambda's runtime does, from CodeUri on sys.path
        assert first.payload["table_at_import"] == "table-at-import"  # the platform's environment
        context = first.payload["context"]
        assert context["function_name"] == "Echo" and context["memory_limit_in_mb"] == 256
        assert context["invoked_function_arn"] == fn_arn("Echo")
        assert context["log_group_name"] == "/aws/lambda/Echo"
        assert 59_000 < context["remaining"] <= 60_000
        assert first.payload["context"]["aws_request_id"] != second.payload["context"]["aws_request_id"]
        assert [r.request_id for r in dispatcher.reports("Echo")] == [
            first.payload["context"]["aws_request_id"], second.payload["context"]["aws_request_id"]]
    finally:
        dispatcher.unload()
    assert _gone(first.payload["pid"]) and _gone(other.payload["pid"])


def test_dispatcher_maps_errors_like_lambda(handler_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = make_dispatcher(handler_root)
    try:
        result = dispatcher.invoke("Boom", {"why": "testing"})
        assert result.error
        assert result.payload == {"errorType": "BoomError", "errorMessage": "it went boom: testing"}
        assert "Traceback" in caplog.text and "it went boom: testing" in caplog.text  # the container's traceback
        with pytest.raises(FunctionError, match="BoomError: it went boom: again"):
            dispatcher.call("Boom", {"why": "again"})
        marshal = dispatcher.invoke("NotJson", {})
        assert marshal.error and marshal.payload["errorType"] == "Runtime.MarshalError"
        with pytest.raises(FunctionNotFound):
            dispatcher.invoke("Nope", {})
    finally:
        dispatcher.unload()


def test_dispatcher_reports_missing_handlers_like_lambda(tmp_path: Path) -> None:
    write_handler(tmp_path, "NoAttr", "x = 1\n")
    write_handler(tmp_path, "Broken", "import no_such_module_anywhere\n")
    dispatcher = LambdaDispatcher({"Missing": (tmp_path / "Missing", "app.lambda_handler"),
                                   "NoAttr": (tmp_path / "NoAttr", "app.lambda_handler"),
                                   "Broken": (tmp_path / "Broken", "app.lambda_handler")})
    try:
        answers = {name: dispatcher.invoke(name, {}).payload for name in ("Missing", "NoAttr", "Broken")}
    finally:
        dispatcher.unload()
    assert answers["Missing"]["errorType"] == "Runtime.ImportModuleError"
    assert answers["NoAttr"] == {"errorType": "Runtime.HandlerNotFound",
                                 "errorMessage": "Handler 'lambda_handler' missing on module 'app'"}
    assert answers["Broken"]["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module_anywhere" in answers["Broken"]["errorMessage"]


def test_dispatcher_puts_codeuri_and_layers_on_sys_path(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "tmplayerpkg").mkdir(parents=True)
    (layer / "tmplayerpkg" / "__init__.py").write_text("VALUE = 'from the layer'\n")
    write_handler(tmp_path, "UsesLayer", """
        import sys
        import tmplayerpkg

        def handle(event, context):
            return [tmplayerpkg.VALUE, sys.path[:2]]
    """, module="main")
    dispatcher = LambdaDispatcher({"UsesLayer": HandlerSpec("UsesLayer", tmp_path / "UsesLayer", "main.handle",
                                                            layer_dirs=(layer,))})
    try:
        assert dispatcher.invoke("UsesLayer", {}).payload == ["from the layer", [str(tmp_path / "UsesLayer"),
                                                                                 str(layer)]]
    finally:
        dispatcher.unload()
    assert str(layer) not in sys.path and "tmplayerpkg" not in sys.modules  # only the container imported it


def test_dispatcher_from_the_real_template() -> None:
    template = Template()
    dispatcher = LambdaDispatcher.from_template(template)
    for lid, fn in template.functions.items():
        spec = dispatcher.resolve(fn.arn)
        assert spec.logical_id == lid and spec.timeout_s == fn.timeout_s and spec.memory_mb == fn.memory_mb
        assert spec.environment == fn.environment and dispatcher.limits(lid) == (fn.timeout_s, fn.memory_mb)
    lid = next(iter(template.functions))
    limited = LambdaDispatcher.from_template(template, function_limits={lid: FunctionLimits(timeout_s=3)})
    assert limited.limits(lid) == (3, template.functions[lid].memory_mb)
    with pytest.raises(FunctionNotFound):
        LambdaDispatcher.from_template(template, function_limits={"NoSuchFunction": FunctionLimits(timeout_s=3)})


# ---------------------------------------------------------------------------------------- moto server
def test_dynamodb_lock_is_counted_and_also_serves_mock_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws
    from moto.dynamodb.responses import DynamoHandler

    from infra.aws import install_dynamodb_lock, uninstall_dynamodb_lock

    original = DynamoHandler.call_action
    for name, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    install_dynamodb_lock()
    install_dynamodb_lock()
    try:
        with mock_aws():
            client = boto3.client("dynamodb")
            client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])

            def add() -> None:
                for _ in range(25):
                    client.update_item(TableName="t", Key={"pk": {"S": "n"}}, UpdateExpression="ADD n :one",
                                       ExpressionAttributeValues={":one": {"N": "1"}})

            workers = [threading.Thread(target=add) for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            assert client.get_item(TableName="t", Key={"pk": {"S": "n"}})["Item"]["n"] == {"N": "100"}
        uninstall_dynamodb_lock()
        assert DynamoHandler.call_action is not original  # still installed once
    finally:
        uninstall_dynamodb_lock()
    assert DynamoHandler.call_action is original


@pytest.mark.parametrize(("operation", "result"), [
    ("Query", {"Count": 1, "ScannedCount": 3, "Items": [
        {"pk": {"S": "a"}, "n": {"N": "1.5"}, "m": {"M": {"x": {"L": [{"S": "y"}, {"BOOL": True}, {"NULL": True}]}}},
         "ss": {"SS": ["p", "q"]}, "ns": {"NS": ["1", "2"]}}], "LastEvaluatedKey": {"pk": {"S": "a"}}}),
    ("BatchGetItem", {"ConsumedCapacity": [], "Responses": {"t": [{"pk": {"S": "Привет"}}]}, "UnprocessedKeys": {}}),
    ("GetItem", {}),
    ("UpdateItem", {"Attributes": None}),
    ("TransactWriteItems", {}),
    ("PutItem", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}}),
])
def test_item_answers_skip_motos_serializer_with_the_same_json(operation: str, result: dict[str, Any]) -> None:
    from moto.core.responses import get_service_model
    from moto.core.serialize import XFormedAttributePicker, get_serializer_class

    model = get_service_model("dynamodb")
    serializer = get_serializer_class("dynamodb", "json")(
        operation_model=model.operation_model(operation), pretty_print=False, value_picker=XFormedAttributePicker())
    body = item_operation_json(operation, result)
    assert body is not None
    assert json.loads(body) == json.loads(serializer.serialize(result)["body"] or "{}")


def test_binary_values_and_other_operations_keep_motos_serializer() -> None:
    assert item_operation_json("GetItem", {"Item": {"b": {"B": "YWJj"}}}) is None
    assert item_operation_json("DescribeTable", {"Table": {"TableName": "t"}}) is None
    assert item_operation_json("Query", {"Items": [{"t": {"S": object()}}]}) is None


@pytest.fixture(scope="class")
def embedded_aws(handler_root: Path) -> Iterator[EmbeddedAws]:
    """A moto server with the template's resources, dispatching to the throwaway functions."""
    template = Template()
    local = LocalAws()
    local.start()
    dispatcher = make_dispatcher(handler_root)
    dispatcher.install()
    try:
        local.create_resources(template)
        yield local, template, dispatcher
    finally:
        dispatcher.uninstall()
        dispatcher.unload()
        local.stop()


class TestEmbeddedAws:
    """One moto server for the class: the template's resources plus throwaway functions."""

    def test_server_env_and_resources_from_the_template(self, embedded_aws: EmbeddedAws) -> None:
        local, template, _ = embedded_aws
        assert os.environ["MOTO_PORT"] == str(local.port)
        dynamodb = local.client("dynamodb")
        for table in template.tables.values():
            described = dynamodb.describe_table(TableName=table.name)["Table"]
            assert described["KeySchema"] == table.key_schema
            assert described["BillingModeSummary"]["BillingMode"] == table.billing_mode
            ttl = dynamodb.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
            assert ttl.get("AttributeName") == table.ttl_attribute
        buckets = {b["Name"] for b in local.client("s3").list_buckets()["Buckets"]}
        assert {b.name for b in template.buckets.values()} <= buckets
        listed = {s["Name"] for s in local.client("secretsmanager").list_secrets()["SecretList"]}
        assert {s.name for s in template.secrets.values()} <= listed
        sfn = local.client("stepfunctions")
        definitions = load_state_machine_definitions(template)
        for lid, machine in template.state_machines.items():
            described = sfn.describe_state_machine(stateMachineArn=machine.arn)
            assert json.loads(described["definition"]) == definitions[lid]

    def _table(self, embedded_aws: EmbeddedAws) -> tuple[Any, str]:
        local, template, _ = embedded_aws
        return local.client("dynamodb"), next(iter(template.tables.values())).name

    def test_racing_conditional_transactions_count_exactly(self, embedded_aws: EmbeddedAws) -> None:
        dynamodb, table = self._table(embedded_aws)
        items, threads = 200, 3
        for start in range(0, items, 25):
            dynamodb.batch_write_item(RequestItems={table: [
                {"PutRequest": {"Item": {"pk": {"S": "RACE#calls"}, "sk": {"S": f"{i:04d}"},
                                         "status": {"S": "pending"}}}}
                for i in range(start, min(items, start + 25))]})
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "RACE#counts"}, "sk": {"S": "day"},
                                                 "pending": {"N": str(items)}, "success": {"N": "0"}})
        won: list[int] = []
        barrier = threading.Barrier(threads)

        def transition_all() -> None:
            client = embedded_aws[0].client("dynamodb")
            barrier.wait()
            for i in range(items):
                try:
                    client.transact_write_items(TransactItems=[
                        {"Update": {"TableName": table, "Key": {"pk": {"S": "RACE#calls"}, "sk": {"S": f"{i:04d}"}},
                                    "UpdateExpression": "SET #s = :new", "ConditionExpression": "#s = :old",
                                    "ExpressionAttributeNames": {"#s": "status"},
                                    "ExpressionAttributeValues": {":new": {"S": "success"}, ":old": {"S": "pending"}}}},
                        {"Update": {"TableName": table, "Key": {"pk": {"S": "RACE#counts"}, "sk": {"S": "day"}},
                                    "UpdateExpression": "ADD success :one, pending :minus",
                                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":minus": {"N": "-1"}}}},
                    ])
                    won.append(i)
                except client.exceptions.TransactionCanceledException:
                    pass

        workers = [threading.Thread(target=transition_all) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        counts = dynamodb.get_item(TableName=table, Key={"pk": {"S": "RACE#counts"}, "sk": {"S": "day"}},
                                   ConsistentRead=True)["Item"]
        assert (int(counts["success"]["N"]), int(counts["pending"]["N"])) == (items, 0)
        assert sorted(won) == list(range(items))  # each item won exactly once

    def test_concurrent_adds_on_a_new_item_lose_nothing(self, embedded_aws: EmbeddedAws) -> None:
        dynamodb, table = self._table(embedded_aws)
        threads, per_thread = 8, 25

        def add() -> None:
            client = embedded_aws[0].client("dynamodb")
            for _ in range(per_thread):
                client.update_item(TableName=table, Key={"pk": {"S": "RACE#new"}, "sk": {"S": "counter"}},
                                   UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}})

        workers = [threading.Thread(target=add) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "RACE#new"}, "sk": {"S": "counter"}})["Item"]
        assert int(item["n"]["N"]) == threads * per_thread

    def test_a_cancelled_transaction_changes_nothing(self, embedded_aws: EmbeddedAws) -> None:
        dynamodb, table = self._table(embedded_aws)

        def key(sk: str) -> dict[str, Any]:
            return {"pk": {"S": "TX#rollback"}, "sk": {"S": sk}}

        dynamodb.put_item(TableName=table, Item={**key("existing"), "v": {"N": "1"}, "keep": {"S": "yes"}})
        dynamodb.put_item(TableName=table, Item={**key("guard"), "state": {"S": "closed"}})
        dynamodb.put_item(TableName=table, Item={**key("doomed"), "v": {"N": "7"}})
        with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
            dynamodb.transact_write_items(TransactItems=[
                {"Update": {"TableName": table, "Key": key("existing"), "UpdateExpression": "ADD v :n REMOVE keep",
                            "ExpressionAttributeValues": {":n": {"N": "10"}}}},
                {"Put": {"TableName": table, "Item": {**key("created"), "v": {"N": "5"}}}},
                {"Delete": {"TableName": table, "Key": key("doomed")}},
                {"Update": {"TableName": table, "Key": key("guard"), "UpdateExpression": "SET #s = :x",
                            "ConditionExpression": "#s = :open", "ExpressionAttributeNames": {"#s": "state"},
                            "ExpressionAttributeValues": {":open": {"S": "open"}, ":x": {"S": "taken"}}}},
            ])
        existing = dynamodb.get_item(TableName=table, Key=key("existing"))["Item"]
        assert existing == {**key("existing"), "v": {"N": "1"}, "keep": {"S": "yes"}}
        assert "Item" not in dynamodb.get_item(TableName=table, Key=key("created"))
        assert dynamodb.get_item(TableName=table, Key=key("doomed"))["Item"]["v"] == {"N": "7"}
        assert dynamodb.get_item(TableName=table, Key=key("guard"))["Item"]["state"] == {"S": "closed"}
        # and a transaction that passes applies every action
        dynamodb.transact_write_items(TransactItems=[
            {"Update": {"TableName": table, "Key": key("existing"), "UpdateExpression": "ADD v :n",
                        "ExpressionAttributeValues": {":n": {"N": "10"}}}},
            {"Put": {"TableName": table, "Item": {**key("created"), "v": {"N": "5"}}}},
        ])
        assert dynamodb.get_item(TableName=table, Key=key("existing"))["Item"]["v"] == {"N": "11"}
        assert dynamodb.get_item(TableName=table, Key=key("created"))["Item"]["v"] == {"N": "5"}

    def test_query_reads_its_partition_in_order_with_conditions_and_pages(self, embedded_aws: EmbeddedAws) -> None:
        dynamodb, table = self._table(embedded_aws)
        for pk in ("Q#a", "Q#b", "Q#c"):
            for i in range(7):
                dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": f"d{i}"}, "n": {"N": str(i)}})

        def query(**extra: Any) -> list[str]:
            pages = dynamodb.get_paginator("query").paginate(
                TableName=table, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={":pk": {"S": "Q#b"}, ":lo": {"S": "d2"}, ":hi": {"S": "d5"}}, **extra)
            return [item["sk"]["S"] + ":" + item["n"]["N"] for page in pages for item in page["Items"]]

        assert query() == ["d2:2", "d3:3", "d4:4", "d5:5"]
        assert query(PaginationConfig={"PageSize": 3}) == ["d2:2", "d3:3", "d4:4", "d5:5"]
        assert query(ScanIndexForward=False) == ["d5:5", "d4:4", "d3:3", "d2:2"]
        empty = dynamodb.query(TableName=table, KeyConditionExpression="pk = :pk",
                               ExpressionAttributeValues={":pk": {"S": "Q#none"}})
        assert empty["Items"] == [] and empty["Count"] == 0

    def test_boto3_lambda_invoke_runs_the_handler(self, embedded_aws: EmbeddedAws) -> None:
        client = embedded_aws[0].client("lambda")
        ok = client.invoke(FunctionName="Echo", Payload=json.dumps({"hello": "world"}))
        assert "FunctionError" not in ok
        assert json.loads(ok["Payload"].read())["event"] == {"hello": "world"}
        failed = client.invoke(FunctionName=fn_arn("Boom"), Payload=json.dumps({"why": "test"}))
        assert failed["FunctionError"] == "Unhandled"
        assert json.loads(failed["Payload"].read()) == {"errorType": "BoomError", "errorMessage": "it went boom: test"}

    def _run(self, embedded_aws: EmbeddedAws, name: str, definition: dict[str, Any],
             execution_input: dict[str, Any]) -> dict[str, Any]:
        sfn = embedded_aws[0].client("stepfunctions")
        arn = sfn.create_state_machine(name=name, definition=json.dumps(definition),
                                       roleArn=f"arn:aws:iam::{ACCOUNT}:role/test")["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(execution_input))["executionArn"]
        described: dict[str, Any] = wait_for(lambda: (d := sfn.describe_execution(executionArn=execution))["status"]
                                             != "RUNNING" and d, timeout=30)
        return described

    def test_step_functions_retry_and_catch_see_the_error_type(self, embedded_aws: EmbeddedAws) -> None:
        definition = {"StartAt": "Flaky", "States": {
            "Flaky": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                      "Parameters": {"FunctionName": fn_arn("Flaky"), "Payload": {"key.$": "$.key"}},
                      "ResultSelector": {"attempts.$": "$.Payload.attempts"}, "ResultPath": "$.flaky",
                      "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "MaxAttempts": 2,
                                 "BackoffRate": 1}],
                      "Next": "Boom"},
            "Boom": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                     "Parameters": {"FunctionName": fn_arn("Boom"), "Payload": {"why": "caught"}},
                     "Catch": [{"ErrorEquals": ["BoomError"], "ResultPath": "$.caught", "Next": "Done"}],
                     "Next": "Done"},
            "Done": {"Type": "Pass", "End": True}}}
        described = self._run(embedded_aws, "retry-catch", definition, {"key": "sfn-1"})
        assert described["status"] == "SUCCEEDED", described
        output = json.loads(described["output"])
        assert output["flaky"] == {"attempts": 2}
        assert output["caught"]["Error"] == "BoomError"
        assert "it went boom: caught" in output["caught"]["Cause"]

    def test_a_stop_right_after_the_start_aborts_the_execution(self, embedded_aws: EmbeddedAws) -> None:
        # moto's worker thread parses the definition before a stop can reach it: a big definition widens that gap.
        states: dict[str, Any] = {f"P{i}": {"Type": "Pass", "Next": f"P{i + 1}"} for i in range(400)}
        states["P400"] = {"Type": "Wait", "Seconds": 60, "End": True}
        sfn = embedded_aws[0].client("stepfunctions")
        machine = sfn.create_state_machine(
            name="stopped-at-once", roleArn=f"arn:aws:iam::{ACCOUNT}:role/test",
            definition=json.dumps({"StartAt": "P0", "States": states}))["stateMachineArn"]
        for attempt in range(5):
            execution = sfn.start_execution(stateMachineArn=machine, name=f"at-once-{attempt}")["executionArn"]
            sfn.stop_execution(executionArn=execution, cause="at once")
            assert sfn.describe_execution(executionArn=execution)["status"] == "ABORTED"

    def test_event_watcher_delivers_terminal_status_events(self, embedded_aws: EmbeddedAws) -> None:
        local, _, dispatcher = embedded_aws
        sfn = local.client("stepfunctions")
        failing = sfn.create_state_machine(
            name="fails", roleArn=f"arn:aws:iam::{ACCOUNT}:role/test", definition=json.dumps({
                "StartAt": "Boom", "States": {"Boom": {
                    "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": fn_arn("Boom"), "Payload": {}}, "End": True}}}))["stateMachineArn"]
        waiting = sfn.create_state_machine(
            name="waits", roleArn=f"arn:aws:iam::{ACCOUNT}:role/test", definition=json.dumps({
                "StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": True}}}),
        )["stateMachineArn"]
        passing = sfn.create_state_machine(
            name="passes", roleArn=f"arn:aws:iam::{ACCOUNT}:role/test", definition=json.dumps({
                "StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
        pattern = {"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                   "detail": {"status": ["ABORTED", "TIMED_OUT", "FAILED"], "stateMachineArn": [failing, waiting]}}
        delivered: list[tuple[str, dict[str, Any], Any]] = []

        def deliver(function: str, event: dict[str, Any]) -> None:
            delivered.append((function, event, dispatcher.invoke(function, event)))

        watcher = ExecutionEventWatcher([EventRule("Recorder", "Ended", pattern)], deliver, interval_s=0.05)
        watcher.start()
        try:
            failed = sfn.start_execution(stateMachineArn=failing, name="will-fail", input='{"a": 1}')["executionArn"]
            sfn.start_execution(stateMachineArn=passing, name="will-pass")
            aborted = sfn.start_execution(stateMachineArn=waiting, name="will-abort")["executionArn"]
            sfn.stop_execution(executionArn=aborted, error="Stopped", cause="by the test")
            wait_for(lambda: len(delivered) >= 2, timeout=20)
            time.sleep(0.3)  # nothing else (the SUCCEEDED run) may arrive
        finally:
            watcher.stop()
        by_arn = {event["detail"]["executionArn"]: (function, event, result) for function, event, result in delivered}
        assert set(by_arn) == {failed, aborted}
        function, event, result = by_arn[failed]
        assert function == "Recorder" and result.payload == {"status": "FAILED"}
        assert event["detail"]["error"] == "BoomError" and json.loads(event["detail"]["input"]) == {"a": 1}
        assert event["resources"] == [failed] and event["detail"]["stateMachineArn"] == failing
        assert by_arn[aborted][1]["detail"]["status"] == "ABORTED"


# ---------------------------------------------------------------------------------------- LocalPlatform
REAL_AMOCRM = {"CALLSIGHT_DEMO_AMOCRM_SUBDOMAIN": "example", "CALLSIGHT_DEMO_AMOCRM_TOKEN": "example-token"}


@pytest.mark.platform
class TestLocalPlatform:
    def test_start_serves_registers_and_stop_frees_everything(self, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
        from infra.platform import LocalPlatform, PlatformError

        for name, value in REAL_AMOCRM.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_PROFILE", "someone-elses-profile")
        monkeypatch.delenv("CALLSIGHT_LOCAL_PLATFORM", raising=False)
        monkeypatch.delenv("MOTO_PORT", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://inherited.invalid")
        route = Template().api_routes[0]
        write_handler(tmp_path, "override", """
            import os

            def lambda_handler(event, context):
                if event["queryStringParameters"] and "fail" in event["queryStringParameters"]:
                    raise RuntimeError("handler failure detail")
                return {"statusCode": 200, "body": os.environ["CALLSIGHT_LOCAL_PLATFORM"] + ":" + context.function_name,
                        "headers": {"x-remaining-ms": str(context.get_remaining_time_in_millis())}}
        """)
        platform = LocalPlatform(port=0, postgres=False, handler_overrides={
            route.function: (tmp_path / "override", "app.lambda_handler")},
            function_limits={route.function: FunctionLimits(timeout_s=7)})
        with platform:
            ports = [platform.api.port if platform.api else 0, platform.aws.port]
            assert platform.amocrm is None and platform.database_url is None
            assert os.environ["AWS_ENDPOINT_URL"] == platform.moto_url
            assert os.environ["CALLSIGHT_LOCAL_PLATFORM"] == "1" and "AWS_PROFILE" not in os.environ
            assert os.environ["POWERTOOLS_TRACE_DISABLED"] == "true"
            for name, value in platform.template.function_environment_union().items():
                assert platform.env[name] == os.environ[name] == value
            index = httpx.get(platform.api_url + "/").json()
            assert {(r["method"], r["path"]) for r in index["routes"]} == {
                (r.method, r.path) for r in platform.template.api_routes}
            answer = httpx.request(route.method, platform.api_url + route.path, headers=platform.api_headers)
            assert (answer.status_code, answer.text) == (200, f"1:{route.function}")
            assert 0 < int(answer.headers["x-remaining-ms"]) <= 7000  # the overridden Timeout
            failed = httpx.request(route.method, platform.api_url + route.path + "?fail=1",
                                   headers=platform.api_headers)
            assert (failed.status_code, failed.json()["error"]) == (502, "bad_gateway")  # the template's response
            assert platform.dispatcher is not None
            reports = platform.dispatcher.reports(route.function)
            assert [r.outcome for r in reports] == ["success", "error"] and reports[-1].error_type == "RuntimeError"
            assert reports[0].memory_size_mb == platform.template.functions[route.function].memory_mb
            profile = platform.boto3_resource("dynamodb").Table(platform.table_name).get_item(
                Key={"pk": "CLIENT#demo", "sk": "PROFILE"})["Item"]
            assert profile["amocrm_subdomain"] == "example" and profile["timezone"] == "Europe/Moscow"
            secrets = platform.boto3_client("secretsmanager")
            prefix = platform.env["CALLSIGHT_AMOCRM_SECRET_PREFIX"]
            stored = json.loads(secrets.get_secret_value(SecretId=prefix + "demo")["SecretString"])
            assert stored["access_token"] == "example-token"
            openai = platform.template.secrets["OpenAIApiKeySecret"].name
            assert secrets.get_secret_value(SecretId=openai)["SecretString"] == "stub-openai-key"
            with pytest.raises(PlatformError):
                LocalPlatform(port=0, postgres=False).start()
            with pytest.raises(PlatformError):
                platform.start()
        platform.stop()  # idempotent
        assert all(port_is_free(port) for port in ports)
        assert os.environ["AWS_ENDPOINT_URL"] == "http://inherited.invalid"
        assert "MOTO_PORT" not in os.environ and "CALLSIGHT_LOCAL_PLATFORM" not in os.environ
        assert os.environ["AWS_PROFILE"] == "someone-elses-profile"
        # the process can start another platform afterwards
        with LocalPlatform(port=0, postgres=False) as again:
            assert httpx.get(again.api_url + "/").status_code == 200

    def test_a_failed_start_cleans_up(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from infra.platform import LocalPlatform

        for name, value in REAL_AMOCRM.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            platform = LocalPlatform(port=busy.getsockname()[1], postgres=False)
            with pytest.raises(OSError):
                platform.start()
        moto_port = LocalAws.last_port
        assert LocalPlatform.active is None
        assert "AWS_ENDPOINT_URL" not in os.environ and not platform.aws.running
        assert moto_port is not None and port_is_free(moto_port)

    def test_with_the_amocrm_stub(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from infra.platform import LocalPlatform

        for name in REAL_AMOCRM:
            monkeypatch.delenv(name, raising=False)
        with LocalPlatform(port=0, postgres=False, demo_calls=5) as platform:
            assert platform.amocrm is not None and platform.amocrm_url == platform.amocrm.url
            profile = platform.boto3_resource("dynamodb").Table(platform.table_name).get_item(
                Key={"pk": "CLIENT#demo", "sk": "PROFILE"})["Item"]
            assert profile["amocrm_base_url"] == platform.amocrm.url
            stub_port = platform.amocrm.port
        assert port_is_free(stub_port)


def _start_serve(extra: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    with log.open("w") as stderr:  # a file, not a pipe nobody drains
        process = subprocess.Popen([sys.executable, "-m", "infra.serve", "--port", "0", *extra], cwd=REPO,
                                   env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline()


@pytest.mark.platform
def test_serve_prints_ready_and_exits_cleanly_on_signals(tmp_path: Path) -> None:
    env = {**REAL_AMOCRM, "PYTHONUNBUFFERED": "1"}
    given_key = new_api_key()
    with_pg, ready_pg = _start_serve([], {**env, "CALLSIGHT_API_KEY": ""}, tmp_path / "with-pg.log")
    without_pg, ready = _start_serve(["--no-postgres"], {**env, "CALLSIGHT_API_KEY": given_key},
                                     tmp_path / "without-pg.log")
    try:
        for line, log in ((ready_pg, "with-pg.log"), (ready, "without-pg.log")):
            assert "ready" in line, (line, (tmp_path / log).read_text())
        url = ready.split("ready at ")[1].split()[0]
        assert httpx.get(url + "/").status_code == 200
        # the demo key: CALLSIGHT_API_KEY's when set (and it opens the API), else a new one
        assert f"API key: {given_key}," in ready
        made_key = ready_pg.split("API key: ")[1].split(",")[0]
        assert parse_api_key(made_key) is not None and made_key != given_key
        status = httpx.get(url + Process.SYNC.spec.status_path, headers={"x-api-key": given_key},
                           params={"client_id": "demo", "start_date": "2026-11-01", "end_date": "2026-11-07"})
        assert status.status_code == 200, status.text
        pg_url = ready_pg.split("postgres ")[-1].rstrip(")\n")
        assert pg_url.startswith("postgresql://")
        postgres = [p for p in psutil.process_iter(["name", "cmdline"])
                    if p.info["name"] == "postgres" and any(pg_url.split("host=")[1] in a
                                                            for a in p.info["cmdline"] or [])]
        assert postgres, "the embedded postgres runs"
        ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in (url, ready.split("moto ")[1].split(",")[0])]

        with_pg.send_signal(signal.SIGTERM)
        without_pg.send_signal(signal.SIGINT)
        assert with_pg.wait(timeout=30) == 0
        assert without_pg.wait(timeout=30) == 0
        for process in (with_pg, without_pg):
            assert process.stdout is not None and process.stdout.read() == ""  # exactly one line on stdout
        assert all(port_is_free(port) for port in ports)

        def gone(proc: psutil.Process) -> bool:
            try:
                return bool(proc.status() == psutil.STATUS_ZOMBIE)
            except psutil.NoSuchProcess:
                return True

        wait_for(lambda: all(gone(p) for p in postgres), timeout=10)
        assert not Path(pg_url.split("host=")[1]).exists()
    finally:
        for process in (with_pg, without_pg):
            if process.poll() is None:
                process.kill()
                process.wait()
