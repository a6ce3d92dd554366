"""Calls and their per-process status, with status counters that stay exact.

Every change of a call's status in a process is one ``TransactWriteItems``: a conditional update of
the call (``<process>_status = :from``) and the ``ADD`` of the day's counters (``from`` -1, ``to`` +1).
A retried, duplicated or racing transition therefore either counts once or fails its condition and
counts nothing, so ``pending + processing + success + failed == total`` holds at every moment. A
transition may also carry a guard: a ConditionCheck on another item in the same transaction (a
worker's claim holds only while its run is recorded running: ``callsight.dal.runs.running_check``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from callsight.dal.table import ConditionFailed, Table, call_sk, calls_pk, counts_pk
from callsight.dates import DateRange, utc_now_iso
from callsight.processes import CallStatus

#: actions per transaction: DynamoDB allows 100; one is the counter update
_BATCH = 99


def status_attr(process: str) -> str:
    return f"{process}_status"


def _counter_update(client_id: str, process: str, day: str, deltas: dict[str, int]) -> dict[str, Any] | None:
    deltas = {k: v for k, v in deltas.items() if v}
    if not deltas:
        return None
    names = {f"#c{i}": name for i, name in enumerate(deltas)}
    values = {f":c{i}": delta for i, delta in enumerate(deltas.values())}
    return {"Update": {
        "Key": {"pk": counts_pk(client_id, process), "sk": day},
        "UpdateExpression": "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(deltas))),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }}


def _status_deltas(frm: str | None, frm_skip: str | None, to: str | None, to_skip: str | None) -> dict[str, int]:
    deltas: Counter[str] = Counter()
    if frm is None:
        deltas["total"] += 1
    else:
        deltas[frm] -= 1
    if to is None:
        deltas["total"] -= 1
    else:
        deltas[to] += 1
    if frm_skip:
        deltas[f"skipped_{frm_skip}"] -= 1
    if to_skip:
        deltas[f"skipped_{to_skip}"] += 1
    return dict(deltas)


@dataclass(frozen=True, slots=True)
class CallKey:
    day: str
    call_id: str

    @property
    def sk(self) -> str:
        return call_sk(self.day, self.call_id)

    @classmethod
    def from_sk(cls, sk: str) -> CallKey:
        day, call_id = sk.split("#", 1)
        return cls(day, call_id)


class CallRepository:
    def __init__(self, table: Table, client_id: str) -> None:
        self.table = table
        self.client_id = client_id
        self.pk = calls_pk(client_id)

    # ------------------------------------------------------------------ reads
    def get(self, key: CallKey) -> dict[str, Any] | None:
        return self.table.get(self.pk, key.sk)

    def in_range(self, days: DateRange) -> list[dict[str, Any]]:
        """The calls of a range: one Query on the client's partition, never a scan."""
        return self.table.query(self.pk, f"{days.start.isoformat()}#", f"{days.end.isoformat()}#\uffff")

    def get_many(self, keys: Iterable[CallKey]) -> dict[str, dict[str, Any]]:
        found = self.table.batch_get([(self.pk, k.sk) for k in keys])
        return {item["sk"]: item for item in found}

    # ------------------------------------------------------------------ writes
    def transition(self, key: CallKey, process: str, frm: str | None, to: str, *, frm_skip: str | None = None,
                   to_skip: str | None = None, set_attrs: dict[str, Any] | None = None,
                   remove: Iterable[str] = (), guard: dict[str, Any] | None = None, of_run: str | None = None) -> bool:
        """Move one call from ``frm`` to ``to`` in ``process``; False when it was not in ``frm`` (or ``guard``,
        a ``{"ConditionCheck": ...}`` action on another item, did not hold, or, with ``of_run``, the call's
        ``<process>_run`` is another run's: then nothing changed either).

        ``frm=None`` enters a stored call into a process it has not been in (it joins the total). The
        call's skip reason (``<process>_skip``) is part of the state: it moves with the status.
        """
        update = self._update(key, process, frm, to, frm_skip=frm_skip, to_skip=to_skip, set_attrs=set_attrs,
                              remove=remove)
        if of_run is not None:
            body = update["Update"]
            body["ConditionExpression"] += " AND #ofrun = :ofrun"
            body["ExpressionAttributeNames"]["#ofrun"] = f"{process}_run"
            body["ExpressionAttributeValues"][":ofrun"] = of_run
        actions: list[dict[str, Any]] = [update, guard] if guard else [update]
        counter = _counter_update(self.client_id, process, key.day, _status_deltas(frm, frm_skip, to, to_skip))
        if counter:
            actions.append(counter)
        try:
            self.table.transact(actions)
        except ConditionFailed:
            return False
        return True

    def transition_many(self, process: str, moves: Iterable[tuple[CallKey, str | None]], to: str, *,
                        set_attrs: dict[str, Any] | None = None, remove: Iterable[str] = (),
                        guard: dict[str, Any] | None = None) -> list[CallKey]:
        """Move each ``(call, from)`` to ``to``: the calls of a day in transactions of up to 99 (98 with a
        ``guard``, as in ``transition``) plus the day's counter update. A call no longer in its ``from`` cancels
        its transaction, which then goes call by call. Returns the calls moved."""
        remove = list(remove)
        size = _BATCH - 1 if guard else _BATCH
        by_day: dict[str, list[tuple[CallKey, str | None]]] = defaultdict(list)
        for key, frm in moves:
            by_day[key.day].append((key, frm))
        moved: list[CallKey] = []
        for day, day_moves in by_day.items():
            for i in range(0, len(day_moves), size):
                batch = day_moves[i:i + size]
                deltas: Counter[str] = Counter()
                actions = []
                for key, frm in batch:
                    actions.append(self._update(key, process, frm, to, set_attrs=set_attrs, remove=remove))
                    deltas.update(_status_deltas(frm, None, to, None))
                counter = _counter_update(self.client_id, process, day, dict(deltas))
                try:
                    self.table.transact([*actions, *([guard] if guard else []), *([counter] if counter else [])])
                    moved.extend(key for key, _ in batch)
                except ConditionFailed:
                    moved.extend(key for key, frm in batch if self.transition(
                        key, process, frm, to, set_attrs=set_attrs, remove=remove, guard=guard))
        return moved

    def _update(self, key: CallKey, process: str, frm: str | None, to: str, *, frm_skip: str | None = None,
                to_skip: str | None = None, set_attrs: dict[str, Any] | None = None,
                remove: Iterable[str] = ()) -> dict[str, Any]:
        """The conditional update of one call's status (``<process>_status = frm``) in a transaction."""
        attr = status_attr(process)
        sets = {attr: to, f"{process}_updated_at": utc_now_iso(), **(set_attrs or {})}
        if to_skip:
            sets[f"{process}_skip"] = to_skip
        removals = [r for r in remove if r not in sets]
        if not to_skip and frm_skip:
            removals.append(f"{process}_skip")
        names = {f"#s{i}": name for i, name in enumerate(sets)}
        values: dict[str, Any] = {f":s{i}": value for i, value in enumerate(sets.values())}
        expression = "SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets)))
        if removals:
            names.update({f"#r{i}": name for i, name in enumerate(removals)})
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removals)))
        names["#from"] = attr
        if frm is None:
            condition = "attribute_exists(pk) AND attribute_not_exists(#from)"
        else:
            values[":from"] = frm
            condition = "#from = :from"
        if frm_skip:
            names["#fskip"] = f"{process}_skip"
            values[":fskip"] = frm_skip
            condition += " AND #fskip = :fskip"
        return {"Update": {
            "Key": {"pk": self.pk, "sk": key.sk},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }}

    def insert_many(self, process: str, calls: list[dict[str, Any]]) -> int:
        """Insert new calls (each carries ``<process>_status`` and maybe ``<process>_skip``), counted.

        Calls of one day go in transactions of up to 99 puts plus that day's counter update; a put
        finding its call already there cancels the whole transaction, which then goes call by call.
        Returns how many calls were inserted by this call.
        """
        by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for call in calls:
            by_day[call["day"]].append(call)
        inserted = 0
        for day, day_calls in by_day.items():
            for i in range(0, len(day_calls), _BATCH):
                batch = day_calls[i:i + _BATCH]
                try:
                    self._insert_batch(process, day, batch)
                    inserted += len(batch)
                except ConditionFailed:
                    for call in batch:
                        try:
                            self._insert_batch(process, day, [call])
                            inserted += 1
                        except ConditionFailed:
                            continue
        return inserted

    def _insert_batch(self, process: str, day: str, batch: list[dict[str, Any]]) -> None:
        deltas: Counter[str] = Counter()
        actions: list[dict[str, Any]] = []
        for call in batch:
            for name, value in _status_deltas(None, None, call[status_attr(process)],
                                              call.get(f"{process}_skip")).items():
                deltas[name] += value
            actions.append({"Put": {
                "Item": {"pk": self.pk, "sk": call_sk(day, call["call_id"]), **call},
                "ConditionExpression": "attribute_not_exists(pk)",
            }})
        counter = _counter_update(self.client_id, process, day, dict(deltas))
        if counter:
            actions.append(counter)
        self.table.transact(actions)

    def update_fields(self, key: CallKey, fields: dict[str, Any]) -> None:
        """Change a call's descriptive fields (never its statuses: those go through ``transition``)."""
        if not fields:
            return
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":f{i}": value for i, value in enumerate(fields.values())}
        self.table.update(self.pk, key.sk, "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                          names=names, values=values, condition="attribute_exists(pk)")


class CounterRepository:
    """Per client, process and day: the counters the status endpoints sum over a range."""

    STATUSES = tuple(s.value for s in CallStatus)

    def __init__(self, table: Table) -> None:
        self.table = table

    def summed(self, client_id: str, process: str, days: DateRange) -> dict[str, int]:
        """One Query of at most 366 small items, whatever the number of calls."""
        items = self.table.query(counts_pk(client_id, process), days.start.isoformat(), days.end.isoformat())
        totals: Counter[str] = Counter()
        for item in items:
            for name, value in item.items():
                if name not in ("pk", "sk") and isinstance(value, int):
                    totals[name] += value
        return {"total": totals["total"], **{s: totals[s] for s in self.STATUSES},
                **{k: v for k, v in totals.items() if k.startswith("skipped_")}}
