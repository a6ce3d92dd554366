"""API keys: checking a presented key (the authorizer), issuing and revoking keys (``callsight-admin``, the local
platform's demo key).

A key lives in two places: its hash and clinics in the table (what the authorizer checks), and an API Gateway API
key of value ``usage_identifier(key_id)`` in the stack's usage plan (what API Gateway throttles the key by: the
authorizer answers that value as ``usageIdentifierKey``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from callsight.access import (
    API_KEY_HEADER,
    KeyScope,
    api_key_hash,
    header_value,
    new_api_key,
    parse_api_key,
    usage_identifier,
)
from callsight.dal.api_keys import ApiKeyRecord, ApiKeyRepository
from callsight.errors import NotAuthenticated


def authenticate(repo: ApiKeyRepository, presented: str | None, *, now: datetime) -> KeyScope:
    """The scope of a valid key; NotAuthenticated (with the reason, never the key) for a missing or malformed key,
    an unknown key_id, a wrong secret or a revoked key."""
    if not presented:
        raise NotAuthenticated("missing")
    record = _record_of(repo, presented)
    if record.revoked:
        raise NotAuthenticated("revoked", key_id=record.key_id)
    return record.scope


def _record_of(repo: ApiKeyRepository, presented: str) -> ApiKeyRecord:
    parsed = parse_api_key(presented)
    if parsed is None:
        raise NotAuthenticated("malformed")
    key_id = parsed[0]
    record = repo.find(key_id)
    if record is None:
        raise NotAuthenticated("unknown key_id", key_id=key_id)
    if not hmac.compare_digest(api_key_hash(presented), record.key_hash):
        raise NotAuthenticated("wrong secret", key_id=key_id)
    return record


class AuthorizerRequest(BaseModel):
    """What the authorizer reads of API Gateway's REQUEST authorizer event."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    #: arn:aws:execute-api:<region>:<account>:<api id>/<stage>/<method>/<path>
    method_arn: str = Field(alias="methodArn", pattern=r"^arn:[^:]+:execute-api:[^:]+:[^:]+:[^/:]+/[^/]+/")
    headers: dict[str, Any] | None = None

    @property
    def api_key(self) -> str | None:
        return header_value(self.headers, API_KEY_HEADER)

    @property
    def api_stage_resource(self) -> str:
        """Every method and path of the request's API stage: the answer is cached by the key for every route."""
        *prefix, resource = self.method_arn.split(":", 5)  # the resource (its path) may hold a colon itself
        api_id, stage = resource.split("/")[:2]
        return f"{':'.join(prefix)}:{api_id}/{stage}/*/*"


def authorizer_answer(scope: KeyScope, request: AuthorizerRequest) -> dict[str, Any]:
    """Allow the key on its API stage, with its scope as the context and its usage plan key for the throttling."""
    return {
        "principalId": scope.key_id,
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": request.api_stage_resource}]},
        "context": scope.to_context(),
        "usageIdentifierKey": usage_identifier(scope.key_id),
    }


def gateway_key_name(key_id: str) -> str:
    return f"callsight-{key_id}"


class ApiKeyIssuer:
    """Creates a key in both places (the API Gateway key first: a record is never stored for a key API Gateway
    would refuse) and revokes it in both (the record first: that is what stops the authorizer)."""

    def __init__(self, repo: ApiKeyRepository, apigateway_client: Any, usage_plan_id: str) -> None:
        self.repo = repo
        self.apigateway = apigateway_client
        self.usage_plan_id = usage_plan_id

    def issue(self, name: str, client_ids: Iterable[str], *, now: datetime,
              key: str | None = None) -> tuple[str, ApiKeyRecord]:
        """A new key (random, or ``key``) for ``client_ids`` (``["*"]``: every clinic): the plain key, shown once,
        and its record."""
        key = key or new_api_key()
        clinics = list(client_ids)
        record = ApiKeyRecord.build(key, name=name, client_ids=clinics, now=now)  # refuses bad input before any write
        created = self.apigateway.create_api_key(
            name=gateway_key_name(record.key_id), value=usage_identifier(record.key_id), enabled=True,
            description=f"Callsight API key {record.key_id}: the usage plan throttles it by this")
        try:
            self.apigateway.create_usage_plan_key(usagePlanId=self.usage_plan_id, keyId=created["id"],
                                                  keyType="API_KEY")
            return self.repo.create(name, clinics, now=now, key=key)
        except Exception:
            self.apigateway.delete_api_key(apiKey=created["id"])  # no half-made key left behind
            raise

    def revoke(self, key_id: str, *, now: datetime) -> ApiKeyRecord:
        """Refuse the key from now on (the authorizer's cached answers expire within its cache time) and delete its
        API Gateway key; again on a revoked key, it finishes what a failed run left."""
        record = self.repo.revoke(key_id, now=now)
        for gateway_key_id in self._gateway_keys(key_id):  # a list: deleting while paging could skip one
            try:
                self.apigateway.delete_api_key(apiKey=gateway_key_id)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NotFoundException":
                    raise
        return record

    def _gateway_keys(self, key_id: str) -> list[str]:
        """The ids of the key's API Gateway keys (by name: the table keeps no API Gateway id)."""
        name = gateway_key_name(key_id)
        pages = self.apigateway.get_paginator("get_api_keys").paginate(nameQuery=name)
        return [item["id"] for page in pages for item in page.get("items", []) if item.get("name") == name]
