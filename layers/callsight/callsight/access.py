"""API keys and what a key may do: the key format, its hash, and a key's clinics (its scope).

A key is ``csk_<key_id>_<secret>``: ``key_id`` 12 lowercase hex characters (names the key in DynamoDB, the logs and
``callsight-admin``; not a secret), ``secret`` 43 URL-safe characters (256 random bits). Only the key's SHA-256 is
stored. The REQUEST authorizer (functions/authorize_request) turns a valid key into a ``KeyScope`` and hands it to
the handlers as ``requestContext.authorizer`` (``KeyScope.to_context``); a handler checks the request's clinic
against it with ``require_client_access`` (defence in depth: the authorizer's answer is cached per key, not per
clinic).

Light on purpose (the status handler imports it): the standard library and callsight.errors only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callsight.errors import ClientAccessDenied, NotAuthenticated

#: a key's clinics when it may use every one (an agency's operator)
ALL_CLINICS = "*"
#: the request header a key comes in (API Gateway's authorizer identity source; header names are case-insensitive)
API_KEY_HEADER = "x-api-key"
#: a key's id: the part of the key that names it (not a secret)
KEY_ID_PATTERN = "[0-9a-f]{12}"
_KEY = re.compile(rf"^csk_({KEY_ID_PATTERN})_([A-Za-z0-9_-]{{43}})$")
KEY_FORMAT = "csk_<12 hex characters>_<43 characters of A-Z a-z 0-9 _ ->"

#: the 401 answer's words (callsight.http; the API Gateway's own 401 says the same)
NOT_AUTHENTICATED_MESSAGE = "a valid API key is required in the x-api-key header (missing, unknown or revoked)"
NOT_AUTHENTICATED_PROBLEM = "missing, unknown or revoked"
#: the 403 answer's problem for the client_id field
CLIENT_DENIED_PROBLEM = "not one of the API key's clinics"


def new_api_key() -> str:
    """A new random key (48 bits of key id, 256 bits of secret)."""
    return f"csk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def parse_api_key(text: str | None) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key; None for anything else (never raises, never echoes the text)."""
    if not isinstance(text, str) or len(text) > 100:
        return None
    match = _KEY.fullmatch(text)  # not match: its $ also matches before a final newline
    return (match.group(1), match.group(2)) if match else None


def api_key_hash(key: str) -> str:
    """The stored form of a key: SHA-256 hex of the whole key. A key carries 256 random bits, so no guessing attack
    is feasible and a slow password hash (bcrypt, scrypt) would only slow down every authorizer call."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def usage_identifier(key_id: str) -> str:
    """The API Gateway API key value the usage plan throttles a key by (the authorizer's ``usageIdentifierKey``).
    Not a secret: with ApiKeySourceType AUTHORIZER no client can present it."""
    return f"callsight-usage-{key_id}"


def header_value(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A request header's value, whatever the case of its name (API Gateway passes names as the client sent them)."""
    wanted = name.lower()
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() == wanted:
            return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What an authenticated key may use: ``client_ids`` None means every clinic."""

    key_id: str
    key_name: str
    client_ids: frozenset[str] | None

    @classmethod
    def of(cls, key_id: str, key_name: str, client_ids: Iterable[str]) -> KeyScope:
        """The scope of a stored key's ``client_ids`` (``["*"]``: every clinic)."""
        ids = frozenset(client_ids)
        return cls(key_id=key_id, key_name=key_name, client_ids=None if ALL_CLINICS in ids else ids)

    def allows(self, client_id: str) -> bool:
        return self.client_ids is None or client_id in self.client_ids

    def to_context(self) -> dict[str, str]:
        """The authorizer's ``context`` (API Gateway allows string values only)."""
        clinics = ALL_CLINICS if self.client_ids is None else ",".join(sorted(self.client_ids))
        return {"key_id": self.key_id, "key_name": self.key_name, "client_ids": clinics}

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> KeyScope:
        """The scope the authorizer put in ``requestContext.authorizer``; NotAuthenticated when there is none."""
        if not context:
            raise NotAuthenticated("no authorizer context")
        key_id, clinics = context.get("key_id"), context.get("client_ids")
        if not isinstance(key_id, str) or not key_id or not isinstance(clinics, str) or not clinics:
            raise NotAuthenticated("the authorizer context has no key_id or client_ids")
        name = context.get("key_name")
        return cls.of(key_id, name if isinstance(name, str) else "", filter(None, clinics.split(",")))


def require_client_access(scope_context: Mapping[str, Any] | None, client_id: str) -> KeyScope:
    """The request's key scope, if it allows ``client_id``: NotAuthenticated without one, else ClientAccessDenied.
    Call it after the request is validated and before looking the clinic up (an unknown clinic of another key's is
    403, never 404: no probing)."""
    scope = KeyScope.from_context(scope_context)
    if not scope.allows(client_id):
        raise ClientAccessDenied(client_id)
    return scope
