"""Embedded AWS: a moto server on loopback holding the template's tables, buckets, secrets and state machines.

The server runs Step Functions definitions for real (moto's ASL interpreter) and uses the
Docker-less Lambda backend (whose ``invoke`` ``infra.lambdas`` replaces). moto's DynamoDB is not
linearizable under concurrent requests, so every DynamoDB action (reads included) runs behind one
process-wide lock: a conditional ``TransactWriteItems`` is then evaluated and applied atomically,
as on AWS. Under that lock a cancelled transaction is rolled back item by item instead of by moto's
whole-table deep copies, and a Query of the table's key reads only its partition instead of sorting
every item of the table, so both cost the same on a table of 10 or 100,000 items. The answers of
item operations, already in DynamoDB's wire format, go out as JSON directly instead of through
moto's model-driven serializer (a third of the server's CPU); an update expression is parsed once
per distinct text, and its clauses counted once per expression instead of once per node.

The process never reaches real AWS: ``refuse_real_aws()`` (``infra.isolation``, installed when moto starts
and never removed) makes botocore refuse any request to a host that is not loopback and resolve no credentials
but dummy ones; ``isolate_from_real_aws()`` also replaces the AWS environment with dummy values. Both are
re-exported here.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import boto3
import botocore.session
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from infra.isolation import DUMMY_CREDENTIALS, refuse_real_aws
from infra.template import ACCOUNT_ID, REGION, Template, render_state_machine_definition

log = logging.getLogger("infra.aws")

#: held by every DynamoDB action served by moto while the lock is installed
DYNAMODB_LOCK = threading.RLock()
STATE_MACHINE_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/callsight-local-states"


class _TransactionState(threading.local):
    active = False


_transaction = _TransactionState()


class _CopyShim:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``: while one of our transactions
    runs, a Table is not deep-copied (moto backs up whole tables per action, O(table size))."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if _transaction.active and isinstance(value, Table):
            return value
        return self._real.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _item_snapshots(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
    """(table, hash key, range key, deep copy of the item or None) for each item the transaction touches."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    snapshots: list[tuple[Any, Any, Any, Any]] = []
    for entry in transact_items:
        for op_type, op in entry.items():
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            if table is None:
                continue
            try:
                key = op["Item"] if op_type == "Put" else op["Key"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            except (KeyError, TypeError, AttributeError):
                continue  # malformed: moto's own validation answers it
            snapshots.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
    return snapshots


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is not None:
        if item is None:
            if hash_key in table.items:
                table.items[hash_key].pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item
    elif item is None:
        table.items.pop(hash_key, None)
    else:
        table.items[hash_key] = item


#: operations whose moto result is DynamoDB wire JSON as it stands (attribute values like {"S": ...})
_ITEM_OPERATIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
                              "BatchWriteItem", "TransactGetItems", "TransactWriteItems"})
_AMZ_JSON = {"Content-Type": "application/x-amz-json-1.0"}


def item_operation_json(operation: str, result: Any) -> str | None:
    """The response body of an item operation, or None when moto's serializer must make it (other
    operations, errors, binary values, which moto keeps in a form of its own)."""
    if operation not in _ITEM_OPERATIONS or not isinstance(result, dict):
        return None
    try:
        body = json.dumps({k: v for k, v in result.items() if v is not None})
    except (TypeError, ValueError):
        return None
    return None if '"B": ' in body or '"BS": ' in body else body


_installs = {"count": 0}
_installs_lock = threading.Lock()


def install_dynamodb_lock() -> None:
    """Serialise moto's DynamoDB actions and roll failed transactions back item by item; also the
    speed patches of the module docstring (partition-only Query, direct JSON answers, parsed update
    expressions kept, clause counts checked once).

    Works for the moto server and for ``mock_aws`` alike (both dispatch through ``DynamoHandler``).
    Item-level rollback is only correct because every action runs under DYNAMODB_LOCK. Calls are
    counted: the patch stays until ``uninstall_dynamodb_lock`` was called as often.
    """
    with _installs_lock:
        _installs["count"] += 1
        if _installs["count"] == 1:
            _patch_dynamodb()


def uninstall_dynamodb_lock() -> None:
    with _installs_lock:
        if _installs["count"] == 0:
            return
        _installs["count"] -= 1
        if _installs["count"] == 0:
            _unpatch_dynamodb()


def _patch_dynamodb() -> None:
    import moto.dynamodb.models
    from moto.dynamodb.responses import DynamoHandler

    ddb_models: Any = moto.dynamodb.models
    if getattr(DynamoHandler.call_action, "_callsight_original", None) is not None:
        return
    original: Callable[[Any], Any] = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with DYNAMODB_LOCK:
            return original(self)

    call_action._callsight_original = original  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]

    original_transact: Callable[[Any, list[dict[str, Any]]], None] = ddb_models.DynamoDBBackend.transact_write_items

    @functools.wraps(original_transact)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with DYNAMODB_LOCK:
            snapshots = _item_snapshots(self, transact_items)
            _transaction.active = True
            try:
                original_transact(self, transact_items)
            except BaseException:
                for table, hash_key, range_key, item in reversed(snapshots):
                    _restore(table, hash_key, range_key, item)
                raise
            finally:
                _transaction.active = False

    transact_write_items._callsight_original = original_transact  # type: ignore[attr-defined]
    ddb_models.DynamoDBBackend.transact_write_items = transact_write_items

    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoResult

    original_result: Callable[[Any, Any], Any] = DynamoResult.execute_result

    @functools.wraps(original_result)
    def execute_result(self: Any, context: Any) -> Any:
        body = item_operation_json(context.operation_model.name, self.result)
        return (200, dict(_AMZ_JSON), body) if body is not None else original_result(self, context)

    execute_result._callsight_original = original_result  # type: ignore[attr-defined]
    DynamoResult.execute_result = execute_result  # type: ignore[method-assign]

    from moto.dynamodb.parsing.ast_nodes import UpdateExpression  # type: ignore[attr-defined]
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
    from moto.dynamodb.parsing.validators import ActionCountValidator

    original_traverse: Callable[[Any, Any], Any] = ActionCountValidator.traverse

    @functools.wraps(original_traverse)
    def traverse(self: Any, node: Any) -> Any:
        # moto checks "at most one SET, REMOVE and ADD clause" at every nested node, each time walking
        # the node's whole subtree; the root holds every clause, so checking it alone is the same test
        if isinstance(node, UpdateExpression):
            return self.verify_action_counts(node)
        return original_traverse(self, node)

    traverse._callsight_original = original_traverse  # type: ignore[attr-defined]
    ActionCountValidator.traverse = traverse  # type: ignore[method-assign]

    original_make: Callable[[Any, str], Any] = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    parsed: dict[str, Any] = {}

    def make(cls: Any, expression_str: str) -> Any:
        # moto reads the tree (clauses) and validates a deep copy of it: one tree per text serves all
        if cls is not UpdateExpressionParser:
            return original_make(cls, expression_str)
        with DYNAMODB_LOCK:
            tree = parsed.get(expression_str)
            if tree is None:
                tree = original_make(cls, expression_str)
                if len(parsed) < 4096:
                    parsed[expression_str] = tree
            return tree

    make._callsight_original = original_make  # type: ignore[attr-defined]
    UpdateExpressionParser.make = classmethod(make)  # type: ignore[method-assign, assignment]

    original_query: Callable[..., Any] = Table.query

    @functools.wraps(original_query)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or not self.range_key_attr or hash_key is None:
            return original_query(self, hash_key, *args, **kwargs)
        with DYNAMODB_LOCK:  # moto's own query reads all_items(): every item of the table, sorted
            partition = list(self.items[hash_key].values()) if hash_key in self.items else []
            self.all_items = lambda: partition
            try:
                return original_query(self, hash_key, *args, **kwargs)
            finally:
                del self.all_items

    query._callsight_original = original_query  # type: ignore[attr-defined]
    Table.query = query  # type: ignore[method-assign]
    if not isinstance(ddb_models.copy, _CopyShim):
        ddb_models.copy = _CopyShim(ddb_models.copy)


def _unpatch_dynamodb() -> None:
    import moto.dynamodb.models
    from moto.dynamodb.responses import DynamoHandler

    ddb_models: Any = moto.dynamodb.models
    original = getattr(DynamoHandler.call_action, "_callsight_original", None)
    if original is not None:
        DynamoHandler.call_action = original  # type: ignore[method-assign]
    original = getattr(ddb_models.DynamoDBBackend.transact_write_items, "_callsight_original", None)
    if original is not None:
        ddb_models.DynamoDBBackend.transact_write_items = original
    if isinstance(ddb_models.copy, _CopyShim):
        ddb_models.copy = ddb_models.copy._real
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoResult

    original = getattr(Table.query, "_callsight_original", None)
    if original is not None:
        Table.query = original  # type: ignore[method-assign]
    original = getattr(DynamoResult.execute_result, "_callsight_original", None)
    if original is not None:
        DynamoResult.execute_result = original  # type: ignore[method-assign]
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
    from moto.dynamodb.parsing.validators import ActionCountValidator

    original = getattr(ActionCountValidator.traverse, "_callsight_original", None)
    if original is not None:
        ActionCountValidator.traverse = original  # type: ignore[method-assign]
    original = getattr(UpdateExpressionParser.make, "_callsight_original", None)
    if original is not None:
        UpdateExpressionParser.make = classmethod(original)  # type: ignore[method-assign, assignment]


def make_stops_final() -> None:
    """A stopped execution is ABORTED from the moment StopExecution returns, as on AWS, and stays so.

    moto's interpreter reflects a stop only when its worker ends, after the tasks in flight have returned
    (so the status-change event, and the run's end, came late while those tasks' workers went on claiming
    calls), and it reads the program's last state then: a task in flight when StopExecution came can fail
    afterwards and turn the run FAILED (its Catch even runs). Idempotent."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    if getattr(Execution.stop, "_callsight_original", None) is not None:
        return
    original_stop: Callable[..., Any] = Execution.stop
    original_reflect: Callable[[Any], None] = BaseExecutionWorkerCommunication._reflect_execution_status

    def worker_started(execution: Any) -> None:
        # The worker's thread parses the definition before it builds the environment a stop is sent to, so a
        # StopExecution right after StartExecution found none (an AttributeError, a 500). Wait for it.
        deadline = time.monotonic() + 10
        while execution.exec_worker is not None and execution.exec_worker.env is None and time.monotonic() < deadline:
            time.sleep(0.005)

    def aborted(execution: Any) -> None:
        execution.exec_status = ExecutionStatus.ABORTED
        execution.stop_date, execution.error, execution.cause = execution._callsight_stopped

    @functools.wraps(original_stop)
    def stop(self: Any, stop_date: Any, error: str | None, cause: str | None) -> Any:
        running = self.exec_status == ExecutionStatus.RUNNING
        if running:
            worker_started(self)
        result = original_stop(self, stop_date=stop_date, error=error, cause=cause)
        if running:
            self._callsight_stopped = (stop_date, error, cause)
            aborted(self)
        return result

    @functools.wraps(original_reflect)
    def reflect(self: Any) -> None:
        original_reflect(self)
        if getattr(self.execution, "_callsight_stopped", None) is not None:
            aborted(self.execution)

    stop._callsight_original = original_stop  # type: ignore[attr-defined]
    Execution.stop = stop  # type: ignore[method-assign]
    BaseExecutionWorkerCommunication._reflect_execution_status = reflect  # type: ignore[method-assign]


def make_nested_executions_start() -> None:
    """``arn:aws:states:::states:startExecution.sync:2`` works as on AWS. The ASL's ``Parameters`` name
    the API's fields as AWS documents them (``StateMachineArn``, ``Name``, ``Input``), and a task's result
    is the API's answer in the same casing (``ExecutionArn``, ``Name``, ``Status``, ``Output``...). moto's
    interpreter hands boto3 the parameters as they are (its JSON serializer only knows ``stateMachineArn``,
    ``name`` and ``input`` and drops the rest) and keeps boto3's casing in the answers. Idempotent."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    if getattr(StateTaskServiceSfn._normalise_parameters, "_callsight_original", None) is not None:
        return
    original: Callable[..., None] = StateTaskServiceSfn._normalise_parameters

    @functools.wraps(original)
    def normalise(self: Any, parameters: dict[str, Any], boto_service_name: str | None = None,
                  service_action_name: str | None = None) -> None:
        original(self, parameters, boto_service_name=boto_service_name, service_action_name=service_action_name)
        if service_action_name is None and self._get_boto_service_action() == "start_execution":
            for name in [key for key in parameters if key[:1].isupper()]:
                parameters[name[0].lower() + name[1:]] = parameters.pop(name)

    def sfn_cased(response: Any) -> None:
        if isinstance(response, dict):
            for name in [key for key in response if key[:1].islower()]:
                response[name[0].upper() + name[1:]] = response.pop(name)

    original_response: Callable[..., None] = StateTaskServiceSfn._normalise_response
    original_eval: Callable[..., None] = StateTaskServiceSfn._eval_service_task

    @functools.wraps(original_response)
    def normalise_response(self: Any, response: Any, boto_service_name: str | None = None,
                           service_action_name: str | None = None) -> None:
        original_response(self, response, boto_service_name=boto_service_name,
                          service_action_name=service_action_name)
        if service_action_name == "describe_execution":
            sfn_cased(response)

    @functools.wraps(original_eval)
    def eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        original_eval(self, env, *args, **kwargs)
        if self._get_boto_service_action() == "start_execution":
            sfn_cased(env.stack[-1])

    normalise._callsight_original = original  # type: ignore[attr-defined]
    StateTaskServiceSfn._normalise_parameters = normalise  # type: ignore[method-assign]
    StateTaskServiceSfn._normalise_response = normalise_response  # type: ignore[method-assign]
    StateTaskServiceSfn._eval_service_task = eval_service_task  # type: ignore[method-assign]


def reset_moto_backends() -> None:
    """Forget every resource moto holds in this process."""
    from moto.core.base_backend import BackendDict

    BackendDict.reset()


def stepfunctions_backend(account_id: str = ACCOUNT_ID, region: str = REGION) -> Any:
    """moto's executing Step Functions backend (the one the server uses with execute_state_machine)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    return stepfunctions_parser_backends[account_id][region]


def create_resources(template: Template, client_factory: Callable[[str], Any]) -> dict[str, str]:
    """Create the template's DynamoDB tables (keys, billing, TTL), S3 buckets, secrets (no value yet), state
    machines and API Gateway usage plans with the clients ``client_factory(service)`` returns (moto server or
    ``mock_aws``). Returns the ids AWS chose, by logical id (the usage plans')."""
    dynamodb = client_factory("dynamodb")
    for table in template.tables.values():
        kwargs: dict[str, Any] = {
            "TableName": table.name, "KeySchema": table.key_schema,
            "AttributeDefinitions": table.attribute_definitions, "BillingMode": table.billing_mode,
        }
        if table.global_secondary_indexes:
            kwargs["GlobalSecondaryIndexes"] = table.global_secondary_indexes
        if table.local_secondary_indexes:
            kwargs["LocalSecondaryIndexes"] = table.local_secondary_indexes
        if table.billing_mode == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = table.provisioned_throughput or {
                "ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        dynamodb.create_table(**kwargs)
        if table.ttl_attribute:
            dynamodb.update_time_to_live(TableName=table.name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": table.ttl_attribute})
    s3 = client_factory("s3")
    for bucket in template.buckets.values():
        s3.create_bucket(Bucket=bucket.name)
    secrets = client_factory("secretsmanager")
    for secret in template.secrets.values():
        secrets.create_secret(Name=secret.name, Description=secret.description)
    stepfunctions = client_factory("stepfunctions")
    for machine in template.state_machines.values():
        stepfunctions.create_state_machine(
            name=machine.name, definition=render_state_machine_definition(machine),
            roleArn=STATE_MACHINE_ROLE_ARN, type=machine.type)
    chosen_ids: dict[str, str] = {}
    usage_plans = template.usage_plans
    if usage_plans:
        apigateway = client_factory("apigateway")
        for plan in usage_plans.values():
            throttle = {name: value for name, value in (("rateLimit", plan.rate_limit),
                                                        ("burstLimit", plan.burst_limit)) if value is not None}
            created = apigateway.create_usage_plan(
                name=plan.name, apiStages=[{"apiId": template.ref(plan.api), "stage": plan.stage}],
                **({"throttle": throttle} if throttle else {}))
            chosen_ids[plan.logical_id] = str(created["id"])
    log.info("created %d table(s), %d bucket(s), %d secret(s), %d state machine(s), %d usage plan(s)",
             len(template.tables), len(template.buckets), len(template.secrets), len(template.state_machines),
             len(usage_plans))
    return chosen_ids


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves a host: moto's own lookup lists its ~200 service
    packages on disk (an ``isdir`` each) twice per request, about 15 % of the server's CPU."""

    def __init__(self, create_app: Callable[[Any], Any]) -> None:
        super().__init__(create_app)
        self._backend_for_host: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        try:
            return self._backend_for_host[host]
        except KeyError:
            backend = self._backend_for_host[host] = super().get_backend_for_host(host)
            return backend


class _Server(ThreadedMotoServer):
    """ThreadedMotoServer that reports a failed bind instead of hanging, and closes its socket on stop."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            app = _Dispatcher(create_backend_app)
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        except BaseException as exc:
            self.error = exc
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.1)

    def start(self) -> None:
        super().start()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        server = self._server
        super().stop()
        if server is not None:
            server.server_close()


class LocalAws:
    """A moto server (Step Functions executing, Lambda without Docker, DynamoDB atomic)."""

    #: the port this process's moto server last listened on; a new server reuses it when free, so boto3
    #: clients that modules cached (e.g. with functools.cache) keep working across platform restarts
    last_port: ClassVar[int | None] = None

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, region: str = REGION,
                 account_id: str = ACCOUNT_ID) -> None:
        self.host = host
        self.requested_port = port
        self.region = region
        self.account_id = account_id
        self._server: _Server | None = None
        self._saved_config: dict[str, Any] | None = None
        self._saved_moto_port: str | None = None
        self._session_lock = threading.Lock()
        self._boto_session: boto3.session.Session | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the moto server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        from moto.core.config import default_user_config

        self._saved_config = copy.deepcopy(cast(dict[str, Any], default_user_config))
        default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        default_user_config.setdefault("lambda", {})["use_docker"] = False
        refuse_real_aws()  # before anything of the platform can make a request; kept for the process's life
        install_dynamodb_lock()
        make_stops_final()
        make_nested_executions_start()
        reset_moto_backends()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per AWS call
        # the ASL interpreter logs every failed state (even retried or caught ones) with a page-long repr;
        # handler errors are logged by infra.lambdas, execution ends by infra.events
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        try:
            server = self._bind()
        except BaseException:
            uninstall_dynamodb_lock()
            self._restore_config()
            raise
        self._server = server
        self.port = server.get_host_and_port()[1]
        LocalAws.last_port = self.port
        # moto's Step Functions interpreter calls Lambda at http://localhost:$MOTO_PORT
        self._saved_moto_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(self.port)
        log.info("moto listening on %s", self.url)

    def _bind(self) -> _Server:
        candidates = [self.requested_port]
        if self.requested_port == 0 and LocalAws.last_port:
            candidates.insert(0, LocalAws.last_port)
        last_error: BaseException | None = None
        for port in candidates:
            server = _Server(self.host, port)
            try:
                server.start()
            except OSError as exc:
                last_error = exc
                continue
            return server
        raise RuntimeError(f"cannot start the moto server on {self.host}:{self.requested_port}: {last_error}")

    def stop(self) -> None:
        """Abort running executions, stop the server, free its port, forget every resource (idempotent)."""
        if self._server is None:
            return
        stopped = self.abort_running_executions("the local platform stopped")  # before their functions go away
        if stopped:
            log.info("aborted %d running execution(s)", stopped)
        server, self._server = self._server, None
        server.stop()
        reset_moto_backends()
        uninstall_dynamodb_lock()
        self._restore_config()
        if self._saved_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._saved_moto_port
        log.info("moto on port %d stopped", self.port)
        self.port = 0

    def _restore_config(self) -> None:
        from moto.core.config import default_user_config

        if self._saved_config is not None:
            config = cast(dict[str, Any], default_user_config)
            config.clear()
            config.update(self._saved_config)
            self._saved_config = None

    def abort_running_executions(self, cause: str) -> int:
        """Stop every RUNNING Step Functions execution (their worker threads end); returns how many."""
        import datetime

        backend = stepfunctions_backend(self.account_id, self.region)
        stopped = 0
        for machine in list(backend.state_machines):
            for execution in list(machine.executions):
                if getattr(execution, "exec_status", None) is not None and execution.status == "RUNNING":
                    try:
                        execution.stop(stop_date=datetime.datetime.now(tz=datetime.UTC), error="States.Aborted",
                                       cause=cause)
                        stopped += 1
                    except Exception:
                        log.exception("could not stop execution %s", execution.exec_arn)
        return stopped

    # ------------------------------------------------------------------ clients and resources
    def _session(self) -> boto3.session.Session:
        """A boto3 session with dummy credentials that ignores AWS_PROFILE and the user's AWS config."""
        with self._session_lock:
            if self._boto_session is None:
                core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
                self._boto_session = boto3.session.Session(
                    botocore_session=core, region_name=self.region,
                    aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
            return self._boto_session

    def client(self, service: str) -> Any:
        """A boto3 client of this server."""
        session = self._session()
        with self._session_lock:  # creating clients from one session is not thread-safe
            return session.client(service, endpoint_url=self.url,  # type: ignore[call-overload]
                                  config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    def resource(self, service: str) -> Any:
        """A boto3 resource of this server."""
        session = self._session()
        with self._session_lock:
            return session.resource(service, endpoint_url=self.url)  # type: ignore[call-overload]

    def create_resources(self, template: Template) -> dict[str, str]:
        """The template's DynamoDB tables, S3 buckets, secrets (no value yet), state machines and usage plans; the
        ids moto chose, by logical id."""
        return create_resources(template, self.client)

    def usage_plan_key_values(self, usage_plan_id: str) -> frozenset[str]:
        """The values of the enabled API keys of a usage plan (what API Gateway accepts as a request's key)."""
        client = self.client("apigateway")
        in_plan = {key["id"] for page in client.get_paginator("get_usage_plan_keys").paginate(usagePlanId=usage_plan_id)
                   for key in page.get("items", [])}
        return frozenset(key["value"] for page in client.get_paginator("get_api_keys").paginate(includeValues=True)
                         for key in page.get("items", []) if key["id"] in in_plan and key.get("enabled"))

    def put_secret_values(self, template: Template, values: Mapping[str, str]) -> None:
        """Fill the template's secrets, by logical id."""
        secrets = self.client("secretsmanager")
        for logical_id, value in values.items():
            secrets.put_secret_value(SecretId=template.secrets[logical_id].name, SecretString=value)
