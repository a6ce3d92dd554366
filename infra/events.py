"""EventBridge emulation for Step Functions "Execution Status Change" events.

moto emits no such events. ``ExecutionEventWatcher`` polls moto's Step Functions backend
in-process, builds the real event for every execution that reached a terminal status, matches it
against the template's ``EventBridgeRule`` patterns (``matches``) and invokes the matching
functions in worker threads.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from infra.template import ACCOUNT_ID, REGION, EventRule

log = logging.getLogger("infra.events")

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
DETAIL_TYPE = "Step Functions Execution Status Change"


# ---------------------------------------------------------------------------------------- matching
def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge pattern matching: every pattern field must match; a list matches any of its values;
    a nested object matches the nested event object. Content filters: prefix, suffix, anything-but, exists."""
    for key, expected in pattern.items():
        present = key in event
        actual = event.get(key)
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping) or not matches(expected, actual):
                return False
        elif isinstance(expected, list):
            if not _matches_any(expected, actual, present):
                return False
        else:
            raise ValueError(f"pattern field {key!r} must be a list or an object, got {expected!r}")
    return True


def _matches_any(allowed: Sequence[Any], actual: Any, present: bool) -> bool:
    values = actual if isinstance(actual, list) else [actual]
    for rule in allowed:
        if isinstance(rule, Mapping):
            if _content_filter(rule, values, present):
                return True
        elif present and any(_same(rule, value) for value in values):
            return True
    return False


def _same(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool) or isinstance(value, bool):
        return rule is value
    if isinstance(rule, (int, float)) and isinstance(value, (int, float)):
        return float(rule) == float(value)
    return bool(rule == value)


def _content_filter(rule: Mapping[str, Any], values: list[Any], present: bool) -> bool:
    if len(rule) != 1:
        raise ValueError(f"unsupported content filter {rule!r}")
    (name, argument), = rule.items()
    if name == "exists":
        return present is bool(argument)
    if not present:
        return False
    if name == "prefix":
        return any(isinstance(v, str) and v.startswith(str(argument)) for v in values)
    if name == "suffix":
        return any(isinstance(v, str) and v.endswith(str(argument)) for v in values)
    if name == "anything-but":
        excluded = argument if isinstance(argument, list) else [argument]
        return all(not any(_same(x, v) for x in excluded) for v in values)
    raise ValueError(f"content filter {name!r} is not supported by the local EventBridge")


# ---------------------------------------------------------------------------------------- events
def _epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _json_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def execution_status_event(execution: Any, *, region: str = REGION, account_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """The event EventBridge delivers for a Step Functions execution's current status."""
    status = str(execution.status)
    stop_date = getattr(execution, "stop_date", None)
    input_data = getattr(execution, "input_data", None)
    if input_data is None:
        input_data = getattr(execution, "execution_input", None)
    output = getattr(execution, "output", None) if status == "SUCCEEDED" else None
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.states",
        "account": account_id,
        "time": (stop_date or datetime.now(tz=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [execution.execution_arn],
        "detail": {
            "executionArn": execution.execution_arn,
            "stateMachineArn": execution.state_machine_arn,
            "name": execution.name,
            "status": status,
            "startDate": _epoch_ms(execution.start_date),
            "stopDate": _epoch_ms(stop_date),
            "input": _json_or_none(input_data) or "{}",
            "output": _json_or_none(output),
            "inputDetails": {"included": True},
            "outputDetails": {"included": True} if output is not None else None,
            "error": getattr(execution, "error", None),
            "cause": getattr(execution, "cause", None),
        },
    }


def _default_executions(account_id: str, region: str) -> Callable[[], Iterable[Any]]:
    def executions() -> Iterable[Any]:
        from infra.aws import stepfunctions_backend

        backend = stepfunctions_backend(account_id, region)
        for machine in list(backend.state_machines):
            yield from list(machine.executions)

    return executions


class ExecutionEventWatcher:
    """Polls Step Functions executions and delivers terminal-status events to matching rules' functions.

    ``deliver(function_logical_id, event)`` runs in a worker thread; its exceptions are logged.
    An execution's event is emitted once it was seen terminal on two polls in a row (moto sets the
    status a moment before error/cause).
    """

    def __init__(self, rules: Sequence[EventRule], deliver: Callable[[str, dict[str, Any]], Any], *,
                 interval_s: float = 0.3, region: str = REGION, account_id: str = ACCOUNT_ID,
                 executions: Callable[[], Iterable[Any]] | None = None, workers: int = 4) -> None:
        self.rules = list(rules)
        self.deliver = deliver
        self.interval_s = interval_s
        self.region = region
        self.account_id = account_id
        self._executions = executions or _default_executions(account_id, region)
        self._workers = workers
        self._seen_terminal: set[str] = set()
        self._emitted: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        # executions that ended before we watched are not news
        for execution in self._safe_executions():
            if self._is_terminal(execution):
                self._emitted.add(execution.execution_arn)
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="eventbridge")
        self._thread = threading.Thread(target=self._run, name="eventbridge-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:
                log.exception("EventBridge emulation: polling Step Functions failed")

    def _safe_executions(self) -> list[Any]:
        try:
            return list(self._executions())
        except Exception:
            log.exception("EventBridge emulation: cannot list executions")
            return []

    @staticmethod
    def _is_terminal(execution: Any) -> bool:
        try:
            return str(execution.status) in TERMINAL_STATUSES
        except AttributeError:  # moto's parser Execution has no status before it starts
            return False

    def poll(self) -> list[dict[str, Any]]:
        """One pass: the events emitted (and submitted for delivery) by it."""
        emitted: list[dict[str, Any]] = []
        for execution in self._safe_executions():
            arn = execution.execution_arn
            if arn in self._emitted or not self._is_terminal(execution):
                continue
            if arn not in self._seen_terminal:
                self._seen_terminal.add(arn)
                continue
            self._emitted.add(arn)
            self._seen_terminal.discard(arn)
            event = execution_status_event(execution, region=self.region, account_id=self.account_id)
            emitted.append(event)
            detail = event["detail"]
            if detail["status"] == "SUCCEEDED":
                log.info("execution %s SUCCEEDED", execution.name)
            else:
                log.warning("execution %s %s: %s %s", execution.name, detail["status"], detail["error"] or "",
                            (detail["cause"] or "")[:300])
            for rule in self.rules:
                if matches(rule.pattern, event):
                    self._submit(rule, event)
        return emitted

    def _submit(self, rule: EventRule, event: dict[str, Any]) -> None:
        log.info("EventBridge rule %s.%s matched: invoking %s", rule.function, rule.event_name, rule.function)
        if self._pool is None:
            self._deliver(rule, event)
        else:
            self._pool.submit(self._deliver, rule, event)

    def _deliver(self, rule: EventRule, event: dict[str, Any]) -> None:
        try:
            self.deliver(rule.function, event)
        except Exception:
            log.exception("EventBridge target %s failed for %s", rule.function, event["detail"]["executionArn"])
