"""API keys in the table: one item per key (``APIKEYS`` / ``KEY#<key_id>``) holding the key's SHA-256, never the
key. The authorizer reads one item per uncached request (GetItem) and records the key's last use (UpdateItem)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from callsight.access import ALL_CLINICS, KEY_FORMAT, KEY_ID_PATTERN, KeyScope, api_key_hash, new_api_key, parse_api_key
from callsight.dal.table import ConditionFailed, Table
from callsight.dates import utc_iso
from callsight.errors import ApiKeyNotFound, CallsightError
from callsight.models import CLIENT_ID_PATTERN

logger = Logger(child=True)

#: the partition of every key's item (the authorizer's IAM policy allows this leading key only)
API_KEYS_PK = "APIKEYS"
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
KEY_NAME_MAX_CHARS = 100


def key_sk(key_id: str) -> str:
    return f"KEY#{key_id}"


class ApiKeyRecord(BaseModel):
    """A key as stored: its id, name, clinics (``["*"]``: every clinic), hash and times (ISO UTC)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    key_id: str = Field(pattern=rf"^{KEY_ID_PATTERN}$")
    name: str = Field(min_length=1, max_length=KEY_NAME_MAX_CHARS)
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    client_ids: list[str] = Field(min_length=1)
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("the name must be printable text (no control characters)")
        return value

    @field_validator("client_ids")
    @classmethod
    def _clinics(cls, value: list[str]) -> list[str]:
        ids = sorted({entry.strip() for entry in value})
        if ALL_CLINICS in ids:
            if len(ids) > 1:
                raise ValueError(f"'{ALL_CLINICS}' (every clinic) cannot be combined with clinic ids")
            return ids
        bad = [entry for entry in ids if not _CLIENT_ID.match(entry)]
        if bad:
            raise ValueError(f"not a client_id: {', '.join(repr(b[:70]) for b in bad[:5])} (letters, digits, _ . -; "
                             "a letter or digit first; at most 64 characters)")
        return ids

    @classmethod
    def build(cls, key: str, *, name: str, client_ids: Iterable[str], now: datetime) -> ApiKeyRecord:
        """The record of a new key (ValueError for a key not in the format, ValidationError for a bad name or
        clinic); never quotes the key."""
        parsed = parse_api_key(key)
        if parsed is None:
            raise ValueError(f"the API key is not in the format {KEY_FORMAT}")
        return cls(key_id=parsed[0], name=name, key_hash=api_key_hash(key), client_ids=list(client_ids),
                   created_at=utc_iso(now))

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def scope(self) -> KeyScope:
        return KeyScope.of(self.key_id, self.name, self.client_ids)


class ApiKeyRepository:
    def __init__(self, table: Table) -> None:
        self.table = table

    def create(self, name: str, client_ids: Iterable[str], *, now: datetime,
               key: str | None = None) -> tuple[str, ApiKeyRecord]:
        """Store a new key (a random one, or ``key`` when given, as its hash); the key and its record. A key_id
        already stored is refused (CallsightError), never overwritten."""
        key = key or new_api_key()
        record = ApiKeyRecord.build(key, name=name, client_ids=client_ids, now=now)
        item = {"pk": API_KEYS_PK, "sk": key_sk(record.key_id), **record.model_dump(exclude_none=True)}
        try:
            self.table.put(item, condition="attribute_not_exists(pk)")
        except ConditionFailed:
            raise CallsightError(f"an API key with key_id {record.key_id} is stored already") from None
        return key, record

    def find(self, key_id: str) -> ApiKeyRecord | None:
        item = self.table.get(API_KEYS_PK, key_sk(key_id))
        return ApiKeyRecord.model_validate(item) if item else None

    def list(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, by key_id (one Query)."""
        return [ApiKeyRecord.model_validate(item) for item in self.table.query(API_KEYS_PK, "KEY#", "KEY#~")]

    def revoke(self, key_id: str, *, now: datetime) -> ApiKeyRecord:
        """Mark the key revoked (a key revoked before keeps its first revocation time); ApiKeyNotFound if unknown."""
        try:
            self.table.update(API_KEYS_PK, key_sk(key_id), "SET revoked_at = if_not_exists(revoked_at, :now)",
                              values={":now": utc_iso(now)}, condition="attribute_exists(pk)")
        except ConditionFailed:
            raise ApiKeyNotFound(key_id) from None
        record = self.find(key_id)
        if record is None:
            raise ApiKeyNotFound(key_id)
        return record

    def touch(self, key_id: str, *, now: datetime) -> bool:
        """Record the key's last use; best effort: a failure is logged and answered False, never raised."""
        try:
            self.table.update(API_KEYS_PK, key_sk(key_id), "SET last_used_at = :now", values={":now": utc_iso(now)},
                              condition="attribute_exists(pk)")
        except (ConditionFailed, ClientError, BotoCoreError) as exc:
            logger.warning("could not record the API key's last use", extra={"key_id": key_id,
                                                                              "error": type(exc).__name__})
            return False
        return True

