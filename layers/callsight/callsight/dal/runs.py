"""Runs of a process (one per client, process and range) and the one-process-per-client lock."""

from __future__ import annotations

from typing import Any

from callsight.dal.table import ConditionFailed, Table, client_pk, run_pk
from callsight.dates import DateRange, utc_now_iso

RUNNING = "RUNNING"


class RunRepository:
    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, client_id: str, process: str, days: DateRange) -> dict[str, Any] | None:
        return self.table.get(run_pk(client_id, process), _range_sk(days), consistent=False)

    def started(self, client_id: str, process: str, days: DateRange, *, execution_name: str,
                execution_arn: str) -> None:
        self.table.put({
            "pk": run_pk(client_id, process), "sk": _range_sk(days), "client_id": client_id, "process": process,
            "start_date": days.start.isoformat(), "end_date": days.end.isoformat(), "status": RUNNING,
            "execution_name": execution_name, "execution_arn": execution_arn, "started_at": utc_now_iso(),
        })

    def finished(self, client_id: str, process: str, days: DateRange, *, execution_name: str, status: str,
                 error: str | None = None, summary: dict[str, Any] | None = None) -> bool:
        """Record the end of *this* execution's run; False if the run is another's or already ended."""
        sets = {"status": status, "finished_at": utc_now_iso(), "summary": summary or {}}
        if error:
            sets["error"] = error[:1000]
        names = {f"#a{i}": k for i, k in enumerate(sets)} | {"#st": "status", "#ex": "execution_name"}
        values = {f":a{i}": v for i, v in enumerate(sets.values())} | {":running": RUNNING, ":ex": execution_name}
        try:
            self.table.update(run_pk(client_id, process), _range_sk(days),
                              "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(sets))),
                              names=names, values=values, condition="#st = :running AND #ex = :ex")
        except ConditionFailed:
            return False
        return True


class ClientLock:
    """At most one process per client: a conditional put of ``CLIENT#<id>/LOCK``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def try_acquire(self, client_id: str, *, process: str, execution_name: str, execution_arn: str,
                    days: DateRange) -> dict[str, Any] | None:
        """Take the lock; if another holds it, return the holder's item (and take nothing)."""
        item = {"pk": client_pk(client_id), "sk": "LOCK", "process": process, "execution_name": execution_name,
                "execution_arn": execution_arn, "start_date": days.start.isoformat(),
                "end_date": days.end.isoformat(), "acquired_at": utc_now_iso()}
        try:
            self.table.put(item, condition="attribute_not_exists(pk)")
        except ConditionFailed:
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
