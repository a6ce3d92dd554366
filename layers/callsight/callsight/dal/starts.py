"""How many runs a clinic started in each fixed UTC hour: one small item per clinic and hour.

``CLIENT#<client>`` / ``STARTS#<YYYY-MM-DDTHH>`` with ``starts`` (a number) and ``expires_at`` (DynamoDB's TTL
removes the item a day after its hour). The count is taken by an action of the transaction that takes the clinic's
lock (``callsight.logic.start_guard``), so a start is counted exactly when it takes the lock.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from callsight.dal.table import ConditionFailed, Table, client_pk

HOUR = timedelta(hours=1)
#: the TTL keeps an hour's count this long after the hour ended (nothing reads it then)
_KEPT_AFTER = timedelta(days=1)


def hour_of(now: datetime) -> datetime:
    """The fixed hour window ``now`` falls in: its first instant (UTC)."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _sk(hour: datetime) -> str:
    return f"STARTS#{hour:%Y-%m-%dT%H}"


class StartCounter:
    def __init__(self, table: Table) -> None:
        self.table = table

    def take_action(self, client_id: str, hour: datetime, limit: int) -> dict[str, Any]:
        """A transaction's Update: one more start in ``hour``, on condition that fewer than ``limit`` were counted."""
        return {"Update": {
            "Key": {"pk": client_pk(client_id), "sk": _sk(hour)},
            "UpdateExpression": "ADD #n :one SET #exp = :exp",
            "ConditionExpression": "attribute_not_exists(#n) OR #n < :limit",
            "ExpressionAttributeNames": {"#n": "starts", "#exp": "expires_at"},
            "ExpressionAttributeValues": {":one": 1, ":limit": limit,
                                          ":exp": int((hour + HOUR + _KEPT_AFTER).timestamp())},
        }}

    def count(self, client_id: str, hour: datetime) -> int:
        item = self.table.get(client_pk(client_id), _sk(hour))
        return int(item.get("starts", 0)) if item else 0

    def give_back(self, client_id: str, hour: datetime) -> None:
        """One start of ``hour`` did not run (its execution could not start): it no longer counts."""
        with suppress(ConditionFailed):  # nothing counted (an item its TTL removed): nothing to give back
            self.table.update(client_pk(client_id), _sk(hour), "ADD #n :minus", names={"#n": "starts"},
                              values={":minus": -1, ":zero": 0}, condition="#n > :zero")

