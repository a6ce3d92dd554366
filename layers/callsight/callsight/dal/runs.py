"""Runs of a process (one per client, process and range) and the one-process-per-client lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from callsight.dal.table import ConditionFailed, Table, client_pk, run_pk
from callsight.dates import DateRange, utc_now_iso

RUNNING = "RUNNING"

def running_check(client_id: str, process: str, days: DateRange, execution_name: str) -> dict[str, Any]:
    """A transaction's ConditionCheck: the range's run is ``execution_name``'s and is still recorded RUNNING."""
    return {"ConditionCheck": {
        "Key": {"pk": run_pk(client_id, process), "sk": _range_sk(days)},
        "ConditionExpression": "#ex = :ex AND #st = :running",
        "ExpressionAttributeNames": {"#ex": "execution_name", "#st": "status"},
        "ExpressionAttributeValues": {":ex": execution_name, ":running": RUNNING},
    }}


class RunRepository:
    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, client_id: str, process: str, days: DateRange) -> dict[str, Any] | None:
        return self.table.get(run_pk(client_id, process), _range_sk(days), consistent=False)

    def started(self, client_id: str, process: str, days: DateRange, *, execution_name: str,
                execution_arn: str, pipeline: str | None = None) -> None:
        """A new run of ``process`` on ``days`` (it replaces the range's previous one); ``pipeline``: the
        pipeline execution that started it."""
        item = {
            "pk": run_pk(client_id, process), "sk": _range_sk(days), "client_id": client_id, "process": process,
            "start_date": days.start.isoformat(), "end_date": days.end.isoformat(), "status": RUNNING,
            "execution_name": execution_name, "execution_arn": execution_arn, "started_at": utc_now_iso(),
        }
        if pipeline:
            item["pipeline"] = pipeline
        self.table.put(item)

    def set_fields(self, client_id: str, process: str, days: DateRange, *, execution_name: str,
                   fields: dict[str, Any]) -> bool:
        """Add facts to *this* execution's run (a report pointer, a step started); False if the run is another's."""
        return self._update_own(client_id, process, days, execution_name, fields)

    def finished(self, client_id: str, process: str, days: DateRange, *, execution_name: str, status: str,
                 error: str | None = None, summary: dict[str, Any] | None = None, closing: bool = False) -> bool:
        """Record the end of *this* execution's run; False if the run is another's or already ended.

        ``closing``: its calls still in progress are being failed (``finish_run`` sets ``closing`` false after)."""
        sets: dict[str, Any] = {"status": status, "finished_at": utc_now_iso(), "summary": summary or {},
                                "closing": closing}
        if error:
            sets["error"] = error[:1000]
        return self._update_own(client_id, process, days, execution_name, sets, only_running=True)

    def _update_own(self, client_id: str, process: str, days: DateRange, execution_name: str,
                    fields: dict[str, Any], *, only_running: bool = False) -> bool:
        """SET ``fields`` on the range's run if ``execution_name`` is its execution (and, optionally, it runs)."""
        names = {f"#f{i}": k for i, k in enumerate(fields)} | {"#ex": "execution_name"}
        values = {f":f{i}": v for i, v in enumerate(fields.values())} | {":ex": execution_name}
        condition = "#ex = :ex"
        if only_running:
            names["#st"], values[":running"] = "status", RUNNING
            condition += " AND #st = :running"
        try:
            self.table.update(run_pk(client_id, process), _range_sk(days),
                              "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                              names=names, values=values, condition=condition)
        except ConditionFailed:
            return False
        return True


class ClientLock:
    """At most one process per client: a conditional put of ``CLIENT#<id>/LOCK``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def try_acquire(self, client_id: str, *, process: str, execution_name: str, execution_arn: str,
                    days: DateRange, together: Sequence[dict[str, Any]] = ()) -> dict[str, Any] | None:
        """Take the lock; if another holds it, return the holder's item (and take nothing).

        ``together``: more actions of the same transaction (the start's count); if the lock is free but one of
        their conditions is false, ConditionFailed and nothing is taken."""
        item = {"pk": client_pk(client_id), "sk": "LOCK", "process": process, "execution_name": execution_name,
                "execution_arn": execution_arn, "start_date": days.start.isoformat(),
                "end_date": days.end.isoformat(), "acquired_at": utc_now_iso()}
        try:
            if together:
                self.table.transact([{"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
                                     *together])
            else:
                self.table.put(item, condition="attribute_not_exists(pk)")
        except ConditionFailed as failed:
            if together and 0 not in failed.actions:
                raise
            holder = self.table.get(client_pk(client_id), "LOCK")
            return holder or {"process": "unknown", "execution_name": "unknown"}
        return None

    def release(self, client_id: str, execution_name: str) -> bool:
        """Release the lock if ``execution_name`` holds it (a late or duplicate release is a no-op)."""
        try:
            self.table.delete(client_pk(client_id), "LOCK", condition="execution_name = :ex",
                              values={":ex": execution_name})
        except ConditionFailed:
            return False
        return True

    def holder(self, client_id: str) -> dict[str, Any] | None:
        return self.table.get(client_pk(client_id), "LOCK")


def _range_sk(days: DateRange) -> str:
    return f"{days.start.isoformat()}#{days.end.isoformat()}"
