"""Clinics: their profile in DynamoDB and their amoCRM credentials in Secrets Manager."""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import boto3
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from callsight.dal.table import Table, client_pk
from callsight.dates import utc_now_iso
from callsight.errors import AmoCrmAuthError, ClientNotFound, validation_problems
from callsight.models import CLIENT_ID_PATTERN

AuthMode = Literal["long_lived", "oauth"]

#: the registry of clinics: one small item per clinic (``CLIENTS`` / ``<client_id>``) written at registration, so
#: the scheduled token refresh lists the clinics with one Query of one partition, never a Scan of the calls
REGISTRY_PK = "CLIENTS"
#: sort-key bounds covering every client id (CLIENT_ID_PATTERN: a letter or digit first, then [A-Za-z0-9_.-])
_REGISTRY_SK_RANGE = ("0", "~")


class ClientProfile(BaseModel):
    """What Callsight knows of a clinic, secrets excepted."""

    model_config = ConfigDict(extra="ignore")

    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    name: str = ""
    amocrm_subdomain: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    #: overrides https://<subdomain>.amocrm.ru (Kommo accounts, the local stub)
    amocrm_base_url: str | None = None
    timezone: str = "Europe/Moscow"
    auth_mode: AuthMode = "long_lived"
    #: per-clinic analysis settings (rubric, prompt, model overrides), used by the analysis process
    analysis: dict[str, Any] = Field(default_factory=dict)
    #: per-clinic transcription settings (``model``, ``language``, ``prompt``, ``keywords``: the clinic's vocabulary)
    transcription: dict[str, Any] = Field(default_factory=dict)
    min_recording_seconds: int | None = Field(default=None, ge=0)
    #: this clinic's own limit of starts per hour (None: StartsPerClinicPerHour; callsight.logic.start_guard)
    starts_per_hour: int | None = Field(default=None, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Moscow)") from None
        return value

    @property
    def base_url(self) -> str:
        return (self.amocrm_base_url or f"https://{self.amocrm_subdomain}.amocrm.ru").rstrip("/")


class ClientRepository:
    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, client_id: str) -> ClientProfile:
        item = self.table.get(client_pk(client_id), "PROFILE", consistent=False)
        if item is None:
            raise ClientNotFound(client_id)
        return ClientProfile.model_validate(item)

    def put(self, profile: ClientProfile) -> None:
        """The profile and its registry entry, in one transaction. A re-registration starts the entry afresh: a new
        pair's age is unknown, so the next scheduled refresh rotates it."""
        now = utc_now_iso()
        item = {"pk": client_pk(profile.client_id), "sk": "PROFILE", "updated_at": now,
                **profile.model_dump(exclude_none=True)}
        entry = {"pk": REGISTRY_PK, "sk": profile.client_id, "client_id": profile.client_id,
                 "auth_mode": profile.auth_mode, "updated_at": now}
        self.table.transact([{"Put": {"Item": item}}, {"Put": {"Item": entry}}])

    def registered(self) -> list[RegisteredClient]:
        """Every registered clinic's registry entry (one Query)."""
        items = self.table.query(REGISTRY_PK, *_REGISTRY_SK_RANGE)
        return [RegisteredClient.model_validate(item) for item in items]

    def record_token_refresh(self, client_id: str, at: int) -> None:
        """The clinic's OAuth pair was exchanged at ``at`` (unix seconds)."""
        self.table.update(REGISTRY_PK, client_id, "SET token_refreshed_at = :at, auth_mode = :oauth, client_id = :id",
                          values={":at": at, ":oauth": "oauth", ":id": client_id})


class RegisteredClient(BaseModel):
    """A clinic's registry entry: how it authenticates and when its OAuth pair was last exchanged."""

    model_config = ConfigDict(extra="ignore")

    client_id: str
    auth_mode: AuthMode
    #: unix seconds of the last exchange of the refresh token by Callsight; None: not since registration
    token_refreshed_at: int | None = None


class AmoCrmCredentials(BaseModel):
    """A long-lived token, or an OAuth pair (single-use refresh token) with the integration's keys."""

    access_token: SecretStr
    refresh_token: SecretStr | None = None
    expires_at: int | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    redirect_uri: str | None = None

    @property
    def can_refresh(self) -> bool:
        return bool(self.refresh_token and self.oauth_client_id and self.oauth_client_secret)

    def to_secret_string(self) -> str:
        raw = {
            "access_token": self.access_token.get_secret_value(),
            "refresh_token": self.refresh_token.get_secret_value() if self.refresh_token else None,
            "expires_at": self.expires_at,
            "oauth_client_id": self.oauth_client_id,
            "oauth_client_secret": self.oauth_client_secret.get_secret_value() if self.oauth_client_secret else None,
            "redirect_uri": self.redirect_uri,
        }
        return json.dumps({k: v for k, v in raw.items() if v is not None})


@cache
def _secrets_client() -> Any:
    return boto3.client("secretsmanager")


class AmoCrmCredentialStore:
    """One secret per clinic, ``<prefix><client_id>``; rotated tokens are written back at once."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def secret_name(self, client_id: str) -> str:
        return f"{self.prefix}{client_id}"

    def load(self, client_id: str) -> AmoCrmCredentials:
        try:
            answer = _secrets_client().get_secret_value(SecretId=self.secret_name(client_id))
        except _secrets_client().exceptions.ResourceNotFoundException:
            raise ClientNotFound(client_id) from None
        try:
            return AmoCrmCredentials.model_validate_json(answer["SecretString"])
        except ValidationError as exc:  # pydantic's message quotes the input: the tokens must not reach the run's error
            raise AmoCrmAuthError(f"the stored amoCRM credentials of {client_id} are malformed "
                                  f"({validation_problems(exc, whole='secret')}): register the clinic again") from None

    def save(self, client_id: str, credentials: AmoCrmCredentials) -> None:
        name = self.secret_name(client_id)
        value = credentials.to_secret_string()
        try:
            _secrets_client().put_secret_value(SecretId=name, SecretString=value)
        except _secrets_client().exceptions.ResourceNotFoundException:
            _secrets_client().create_secret(
                Name=name, SecretString=value, Description=f"Callsight amoCRM credentials of {client_id}"
            )
