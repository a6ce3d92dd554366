"""The amoCRM API v4 client: call notes of every entity type, paced, retried, paginated."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from callsight.amocrm.ratelimit import RateLimiter
from callsight.amocrm.tokens import TokenProvider
from callsight.errors import AmoCrmAuthError, AmoCrmError, AmoCrmUnavailable

ENTITY_TYPES = ("leads", "contacts", "companies")
CALL_NOTE_TYPES = ("call_in", "call_out")
_RETRYABLE = {429, 500, 502, 503, 504}


class AmoCrmClient:
    """Every request is paced by one shared limiter (amoCRM allows 7/s per integration), retried
    with backoff on 429, 5xx, malformed JSON and network errors, and authorised by ``tokens``
    (a 401 triggers one refresh). Tokens never appear in errors or logs."""

    def __init__(self, base_url: str, tokens: TokenProvider, *, requests_per_second: float = 6.6,
                 page_size: int = 250, max_attempts: int = 6, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.tokens = tokens
        self.limiter = RateLimiter(requests_per_second, sleep=sleep)
        self.page_size = page_size
        self.max_attempts = max_attempts
        self.http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self._sleep = sleep
        self.requests_sent = 0

    # ------------------------------------------------------------------ API
    def call_notes(self, entity_type: str, updated_from: int,
                   updated_to: int | None = None) -> Iterator[dict[str, Any]]:
        """Every call note (in and out) of one entity type updated in [from, to], page by page."""
        first: dict[str, Any] = {
            "filter[note_type][]": list(CALL_NOTE_TYPES),
            "filter[updated_at][from]": updated_from,
            "limit": self.page_size,
            "page": 1,
        }
        if updated_to is not None:
            first["filter[updated_at][to]"] = updated_to
        params: dict[str, Any] | None = first
        url: str | None = f"{self.base_url}/api/v4/{entity_type}/notes"
        while url:
            body = self._get_json(url, params)
            if body is None:  # 204: nothing (more)
                return
            notes = body.get("_embedded", {}).get("notes", [])
            for note in notes:
                note.setdefault("entity_type", entity_type)
                yield note
            next_href = body.get("_links", {}).get("next", {}).get("href")
            if not next_href or not notes:
                return
            if _origin(next_href) != self._origin:
                raise AmoCrmError("amoCRM's next-page link points to another host; refusing to follow it")
            url, params = next_href, None  # the link carries the query; params would replace it

    def all_call_notes(self, updated_from: int, updated_to: int | None = None) -> list[dict[str, Any]]:
        """Call notes of leads, contacts and companies, fetched concurrently under the one limiter."""
        with ThreadPoolExecutor(len(ENTITY_TYPES)) as pool:
            parts = pool.map(lambda e: list(self.call_notes(e, updated_from, updated_to)), ENTITY_TYPES)
            return [note for part in parts for note in part]

    def users(self) -> dict[int, str]:
        """Account users (the administrators) by id -> name."""
        names: dict[int, str] = {}
        url: str | None = f"{self.base_url}/api/v4/users"
        params: dict[str, Any] | None = {"limit": 250}
        while url:
            body = self._get_json(url, params)
            if body is None:
                break
            for user in body.get("_embedded", {}).get("users", []):
                names[int(user["id"])] = str(user.get("name", ""))
            url = body.get("_links", {}).get("next", {}).get("href")
            if url and _origin(url) != self._origin:
                break
            params = None
        return names

    # ------------------------------------------------------------------ transport
    def _get_json(self, url: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        token = self.tokens.access_token()
        refreshed = False
        last_problem = "no answer"
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            self.requests_sent += 1
            try:
                answer = self.http.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                last_problem = f"network error ({type(exc).__name__})"
                self._backoff(attempt)
                continue
            status = answer.status_code
            if status == 204:
                return None
            if status == 200:
                try:
                    body = answer.json()
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                    return body
                except ValueError:
                    last_problem = "malformed JSON"
                    self._backoff(attempt)
                    continue
            if status == 401 and not refreshed:
                token = self.tokens.refresh(token)
                refreshed = True
                continue
            if status in (401, 403):
                raise AmoCrmAuthError(f"amoCRM refused access (HTTP {status}) to {urlsplit(url).path}: "
                                      "check the client's token and the integration's rights")
            if status == 504 and params and params.get("limit", 0) > 25:
                params = {**params, "limit": params["limit"] // 2}  # amoCRM's advice: shrink the page
                last_problem = "HTTP 504"
                continue
            if status in _RETRYABLE:
                last_problem = f"HTTP {status}"
                if status == 429:
                    self.limiter.pause(_retry_after(answer) or 1.0)
                self._backoff(attempt)
                continue
            raise AmoCrmError(f"amoCRM answered HTTP {status} to {urlsplit(url).path}")
        raise AmoCrmUnavailable(f"amoCRM kept failing ({last_problem}) after {self.max_attempts} attempts "
                                f"on {urlsplit(url).path}")

    def _backoff(self, attempt: int) -> None:
        self._sleep(min(0.5 * 2 ** (attempt - 1), 8.0) * (0.5 + random.random() / 2))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _retry_after(answer: httpx.Response) -> float | None:
    try:
        return float(answer.headers.get("retry-after", ""))
    except ValueError:
        return None
