"""The scheduled keep-alive of amoCRM OAuth pairs.

amoCRM's refresh tokens expire when unused (about 3 months): a clinic whose calls are not synced for a while
would need its integration authorised again. On a schedule (template.yaml, daily) every OAuth clinic whose pair
was last exchanged longer ago than a setting gets a new pair through the same leased ``StoredToken`` path a sync
uses, so it never races a running sync. Long-lived tokens and recently exchanged pairs are left alone. The
clinics come from the registry (one Query); one clinic's failure is its own line in the report, never the others'.
Reasons never quote a token.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Literal

import httpx
from aws_lambda_powertools import Logger
from pydantic import BaseModel

from callsight.amocrm.tokens import StoredToken
from callsight.dal.clients import AmoCrmCredentialStore, ClientRepository, RegisteredClient
from callsight.errors import CallsightError

logger = Logger(child=True)

RefreshOutcome = Literal["refreshed", "skipped", "failed"]


class ClinicRefresh(BaseModel):
    client_id: str
    outcome: RefreshOutcome
    reason: str


class TokenRefreshReport(BaseModel):
    refreshed: int = 0
    skipped: int = 0
    failed: int = 0
    clients: list[ClinicRefresh] = []

    def add(self, line: ClinicRefresh) -> None:
        self.clients.append(line)
        setattr(self, line.outcome, getattr(self, line.outcome) + 1)


def refresh_stale_pairs(*, clients: ClientRepository, store: AmoCrmCredentialStore, http: httpx.Client,
                        refresh_after: timedelta, now: float | None = None) -> TokenRefreshReport:
    """Exchange every OAuth pair last exchanged over ``refresh_after`` ago (never exchanged ones first)."""
    moment = time.time() if now is None else now
    report = TokenRefreshReport()
    for entry in sorted(clients.registered(), key=lambda e: (e.token_refreshed_at or 0, e.client_id)):
        outcome, reason = _refresh_clinic(entry, clients, store, http, refresh_after=refresh_after, now=moment)
        report.add(ClinicRefresh(client_id=entry.client_id, outcome=outcome, reason=reason))
    return report


def _refresh_clinic(entry: RegisteredClient, clients: ClientRepository, store: AmoCrmCredentialStore,
                    http: httpx.Client, *, refresh_after: timedelta, now: float) -> tuple[RefreshOutcome, str]:
    if entry.auth_mode != "oauth":
        return "skipped", "long-lived token: nothing to refresh"
    last = entry.token_refreshed_at
    if last is not None and now - last < refresh_after.total_seconds():
        return "skipped", f"pair exchanged {_days(now - last)} ago"
    try:
        profile = clients.get(entry.client_id)
        tokens = StoredToken(profile.client_id, profile.base_url, store, clients.table, http)
        if not tokens.can_refresh:
            return "skipped", "long-lived token: nothing to refresh"
        if not tokens.rotate():
            return "skipped", "pair exchanged by another worker meanwhile"
    except CallsightError as exc:  # refused, unreachable, not registered: the message names it, never a token
        return "failed", str(exc)
    except Exception as exc:
        logger.exception("token refresh failed", extra={"client": entry.client_id})
        return "failed", f"unexpected {type(exc).__name__}"
    since = f"last exchanged {_days(now - last)} ago" if last is not None else "not exchanged since registration"
    return "refreshed", f"new pair stored ({since})"


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days"
