"""amoCRM access tokens: long-lived ones, or OAuth pairs refreshed once and persisted at once.

amoCRM's refresh token is single-use: two refreshes racing would leave one side with a revoked
pair. A refresh therefore runs under a short DynamoDB lease, re-reads the secret first (another
worker may have refreshed already) and writes the new pair before anything uses it; the clinic's registry
entry records when (the scheduled keep-alive, ``callsight.logic.token_refresh``, rotates pairs left unused).
The refresh sends the ``redirect_uri`` the integration was registered with: amoCRM refuses another.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import httpx
from pydantic import SecretStr

from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore, ClientRepository
from callsight.dal.table import ConditionFailed, Table, client_pk
from callsight.errors import AmoCrmAuthError, AmoCrmUnavailable

_LEASE_SECONDS = 30
_EARLY_REFRESH_SECONDS = 300


class TokenProvider(Protocol):
    def access_token(self) -> str: ...

    def refresh(self, rejected: str) -> str:
        """A token other than ``rejected``, or AmoCrmAuthError."""
        ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def access_token(self) -> str:
        return self._token

    def refresh(self, rejected: str) -> str:
        raise AmoCrmAuthError("amoCRM rejected the token (401); register a new one with callsight-admin")


class StoredToken:
    """The client's credentials from Secrets Manager; OAuth pairs refreshed under a lease."""

    def __init__(self, client_id: str, base_url: str, store: AmoCrmCredentialStore, table: Table,
                 http: httpx.Client) -> None:
        self.client_id = client_id
        self.base_url = base_url
        self.store = store
        self.table = table
        self.http = http
        self._lock = threading.Lock()
        self._credentials = store.load(client_id)

    def access_token(self) -> str:
        with self._lock:
            creds = self._credentials
            if creds.can_refresh and creds.expires_at and creds.expires_at - _EARLY_REFRESH_SECONDS < time.time():
                return self._refresh_locked(creds.access_token.get_secret_value())
            return creds.access_token.get_secret_value()

    def refresh(self, rejected: str) -> str:
        with self._lock:
            return self._refresh_locked(rejected)

    @property
    def can_refresh(self) -> bool:
        """An OAuth pair (a long-lived token has nothing to refresh)."""
        return self._credentials.can_refresh

    def rotate(self) -> bool:
        """Exchange the refresh token for a new pair now, under the lease (the scheduled keep-alive). False when
        another worker exchanged the pair since it was loaded here: it is fresh, nothing is sent."""
        with self._lock:
            return self._exchange_under_lease(self._credentials.access_token.get_secret_value())

    def _refresh_locked(self, rejected: str) -> str:
        self._exchange_under_lease(rejected)
        return self._credentials.access_token.get_secret_value()

    def _exchange_under_lease(self, rejected: str) -> bool:
        """Exchange the pair whose access token is ``rejected``; False when the held or stored one is another."""
        if self._credentials.access_token.get_secret_value() != rejected:
            return False
        if not self._credentials.can_refresh:
            raise AmoCrmAuthError(
                "amoCRM rejected the long-lived token (401); register a new one with callsight-admin")
        deadline = time.monotonic() + _LEASE_SECONDS
        while not self._take_lease():
            if time.monotonic() > deadline:
                raise AmoCrmUnavailable("another worker is refreshing the amoCRM token; try again")
            time.sleep(0.5)
        try:
            current = self.store.load(self.client_id)
            if current.access_token.get_secret_value() != rejected:
                self._credentials = current  # refreshed by someone else meanwhile
                return False
            self._credentials = self._exchange(current)
            self.store.save(self.client_id, self._credentials)
            ClientRepository(self.table).record_token_refresh(self.client_id, int(time.time()))
            return True
        finally:
            self._release_lease()

    def _exchange(self, creds: AmoCrmCredentials) -> AmoCrmCredentials:
        assert creds.refresh_token and creds.oauth_client_secret
        if not creds.redirect_uri:  # amoCRM refuses a refresh whose redirect_uri is not the integration's
            raise AmoCrmAuthError(f"the OAuth credentials of {self.client_id} have no redirect_uri: register the "
                                  "clinic again with the integration's redirect_uri in the --oauth-file")
        try:
            answer = self.http.post(f"{self.base_url}/oauth2/access_token", json={
                "client_id": creds.oauth_client_id,
                "client_secret": creds.oauth_client_secret.get_secret_value(),
                "grant_type": "refresh_token",
                "refresh_token": creds.refresh_token.get_secret_value(),
                "redirect_uri": creds.redirect_uri,
            })
        except httpx.HTTPError as exc:
            raise AmoCrmUnavailable(f"amoCRM token refresh failed: {type(exc).__name__}") from None
        if answer.status_code in (400, 401, 403):
            raise AmoCrmAuthError(
                f"amoCRM refused the token refresh (HTTP {answer.status_code}); authorise the integration again")
        if answer.status_code != 200:
            raise AmoCrmUnavailable(f"amoCRM token refresh answered HTTP {answer.status_code}")
        try:
            body = answer.json()
            return creds.model_copy(update={
                "access_token": SecretStr(body["access_token"]),
                "refresh_token": SecretStr(body["refresh_token"]),
                "expires_at": int(time.time()) + int(body.get("expires_in", 86400)),
            })
        except (ValueError, KeyError, TypeError):
            raise AmoCrmUnavailable("amoCRM token refresh answered malformed JSON") from None

    def _take_lease(self) -> bool:
        now = int(time.time())
        try:
            self.table.put({"pk": client_pk(self.client_id), "sk": "TOKEN_REFRESH", "until": now + _LEASE_SECONDS,
                            "expires_at": now + 3600},
                           condition="attribute_not_exists(pk) OR #u < :now", names={"#u": "until"},
                           values={":now": now})
        except ConditionFailed:
            return False
        return True

    def _release_lease(self) -> None:
        self.table.delete(client_pk(self.client_id), "TOKEN_REFRESH")
