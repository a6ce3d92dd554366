"""One amoCRM GET: paced by the shared limiter, authorised (a 401 refreshes the token once), retried, and,
when it cannot succeed, an error an operator can act on. Tokens never appear in errors or logs."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from callsight.amocrm.ratelimit import RateLimiter, Slot
from callsight.amocrm.tokens import TokenProvider
from callsight.errors import AmoCrmAccountError, AmoCrmAuthError, AmoCrmError, AmoCrmLockedOut, AmoCrmUnavailable

_SERVER_ERRORS = {500, 502, 503, 504}
#: a 403 saying one of these is amoCRM's rate-limit lockout (it blocks the IP after repeated 429s)
_LOCKOUT_WORDS = re.compile(r"too many|rate.?limit|blocked|banned|заблокир|превышен", re.IGNORECASE)
#: a 403 saying one of these comes from the account's API IP allow-list
_ALLOW_LIST_WORDS = re.compile(r"\bip\b|ip-адрес|white.?list|allow.?list|белый список|белого списка", re.IGNORECASE)
#: a 403 this soon after a 429 of ours is taken for the lockout
_LOCKOUT_AFTER_429_SECONDS = 60.0
_SHOWN_TEXT = 200


class _NoContent:
    """A 204 answer: nothing (more) to list."""


NO_CONTENT = _NoContent()


@dataclass(frozen=True)
class LockoutBackoff:
    """How a lockout is waited out: every request held ``first_pause`` s, doubling up to ``max_pause``; the
    ``answers``-th lockout answer of a client is AmoCrmLockedOut (after 60 s + 120 s by default)."""

    first_pause: float = 60.0
    max_pause: float = 240.0
    answers: int = 3


class Transport:
    def __init__(self, base_url: str, tokens: TokenProvider, *, limiter: RateLimiter, http: httpx.Client,
                 max_attempts: int, lockout: LockoutBackoff, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.limiter = limiter
        self.http = http
        self.max_attempts = max_attempts
        self.lockout = lockout
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        self._last_429: float | None = None
        self._lockout_answers = 0  # lockout answers acted on in this client's life: the cap
        self._in_lockout = False  # a 2xx ends it: the next 403 is judged afresh
        self._lockout_decided = float("-inf")  # when the current pause was decided
        self._locked_out: str | None = None  # the message, once we gave up

    def get_json(self, url: str, params: dict[str, Any] | None) -> Any:
        """The answer's JSON (any value), NO_CONTENT for a 204, or an AmoCrmError saying what to do."""
        path = urlsplit(url).path
        token = self.tokens.access_token()
        refreshed = False
        failures = 0
        last_problem = "no answer"
        while True:
            with self.limiter.request() as slot:
                self._count_request()
                try:
                    answer = self.http.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError as exc:
                    answer = None
                    last_problem = f"could not be reached ({type(exc).__name__})"
                if answer is not None and answer.status_code == 429:
                    slot.rate_limited(_retry_after(answer))
            if answer is None:
                failures = self._failed(failures, path, last_problem, backoff=True)
                continue
            status = answer.status_code
            if status == 204:
                self._succeeded()
                return NO_CONTENT
            if status == 200:
                try:
                    body = answer.json()
                except ValueError:
                    failures = self._failed(failures, path, "answered malformed JSON", backoff=True)
                    continue
                self._succeeded()
                return body
            if status == 401:
                if refreshed:
                    raise AmoCrmAuthError(_unauthorized(path), status=401)
                try:
                    token = self.tokens.refresh(token)
                except AmoCrmAuthError as exc:
                    raise AmoCrmAuthError(_unauthorized(path, f" and could not be refreshed ({exc})"),
                                          status=401) from None
                refreshed = True
                continue
            text = _answer_text(answer, token)
            if status == 403:
                if self._is_lockout(text, slot):
                    self._back_off_lockout(path, slot)
                    continue
                raise AmoCrmAuthError(_forbidden(path, text), status=403)
            if status == 402:
                raise AmoCrmAccountError(
                    f"amoCRM answered 402 Payment Required on {path}: the account is not paid (its subscription "
                    f"has expired or its plan lacks this feature); renew it in amoCRM, then start again{_said(text)}",
                    status=402)
            if status == 404:
                raise AmoCrmAccountError(
                    f"amoCRM answered 404 Not Found on {path}: no such amoCRM account or API at {self.base_url}; "
                    f"check the clinic's subdomain / base URL (callsight-admin register-client --subdomain, "
                    f"--base-url){_said(text)}", status=404)
            if status == 504 and params and params.get("limit", 0) > 25:
                params = {**params, "limit": params["limit"] // 2}  # amoCRM's advice: shrink the page
                failures = self._failed(failures, path, "timed out (HTTP 504)", backoff=False)
                continue
            if status == 429:
                with self._lock:
                    self._last_429 = slot.started
                failures = self._failed(failures, path, "kept rate-limiting (HTTP 429)", backoff=False)
                continue  # the limiter holds every request back
            if status in _SERVER_ERRORS:
                failures = self._failed(failures, path, f"is unavailable (HTTP {status})", backoff=True)
                continue
            raise AmoCrmError(f"amoCRM answered HTTP {status} on {path}{_said(text)}", status=status)

    # ------------------------------------------------------------------ failures
    def _failed(self, failures: int, path: str, problem: str, *, backoff: bool) -> int:
        """One more failed attempt: a pause before the next, or AmoCrmUnavailable after the last."""
        failures += 1
        if failures >= self.max_attempts:
            raise AmoCrmUnavailable(f"amoCRM {problem} on {path} after {failures} attempts: try again later")
        if backoff:
            self._sleep(min(0.5 * 2 ** (failures - 1), 8.0) * (0.5 + random.random() / 2))
        return failures

    def _count_request(self) -> None:
        with self._lock:
            self.requests_sent += 1

    def _succeeded(self) -> None:
        with self._lock:
            self._in_lockout = False

    def _is_lockout(self, text: str, slot: Slot) -> bool:
        with self._lock:
            after_429 = self._last_429 is not None and slot.started - self._last_429 < _LOCKOUT_AFTER_429_SECONDS
            return bool(_LOCKOUT_WORDS.search(text)) or after_429 or self._in_lockout

    def _back_off_lockout(self, path: str, slot: Slot) -> None:
        """Holds every request back (60 s, doubling) or, after the last lockout answer, raises AmoCrmLockedOut.
        Answers to requests started before the current pause was decided belong to the same lockout."""
        with self._lock:
            if self._locked_out is None and slot.started < self._lockout_decided:
                return  # already paused for: the retry waits in the limiter
            if self._locked_out is None:
                self._lockout_answers += 1
                self._in_lockout = True
                self._lockout_decided = self._clock()
                if self._lockout_answers >= self.lockout.answers:
                    waited = sum(self._lockout_pause(n) for n in range(1, self._lockout_answers))
                    self._locked_out = (
                        f"amoCRM locked this IP address out for too many requests (HTTP 403 on {path}) and still "
                        f"did after {waited:.0f} s of waiting; wait until amoCRM lifts the block (check that no "
                        "other integration floods the account from this address), then start the sync again")
            if self._locked_out is not None:
                raise AmoCrmLockedOut(self._locked_out, status=403)
            # under our lock: no retry can start between this decision and the pause
            self.limiter.pause(self._lockout_pause(self._lockout_answers))

    def _lockout_pause(self, answers: int) -> float:
        return min(self.lockout.first_pause * 2.0 ** (answers - 1), self.lockout.max_pause)


def _unauthorized(path: str, refresh: str = "") -> str:
    return (f"amoCRM rejected the clinic's token (HTTP 401 on {path}){refresh}: register a new one with "
            "callsight-admin register-client")


def _forbidden(path: str, text: str) -> str:
    if _ALLOW_LIST_WORDS.search(text):
        cause = ("the account's API IP allow-list does not include this address; add it in amoCRM's security "
                 "settings")
    else:
        cause = ("the token's user lacks the rights to it (or the account's IP allow-list excludes this address); "
                 "give the integration's user access, or register a token of an administrator")
    return f"amoCRM refused access (HTTP 403) to {path}: {cause}{_said(text)}"


def _said(text: str) -> str:
    return f" (amoCRM said: {text})" if text else ""


def _answer_text(answer: httpx.Response, token: str) -> str:
    """What an error answer says (problem+json's title and detail, or the text without markup), short, and never
    the token even if a server echoed it."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = " ".join(str(body[k]) for k in ("title", "detail", "hint") if isinstance(body.get(k), str | int))
    else:
        text = re.sub(r"<[^>]*>", " ", answer.text)
    text = " ".join(text.split())
    if token:
        text = text.replace(token, "[token]")
    return text[:_SHOWN_TEXT]


def _retry_after(answer: httpx.Response) -> float | None:
    try:
        return float(answer.headers.get("retry-after", ""))
    except ValueError:
        return None
