"""A stub amoCRM: a real HTTP server speaking the part of amoCRM API v4 Callsight uses.

Serves the clinic's call notes (``GET /api/v4/{leads|contacts|companies|customers}/notes``; with
``customers_enabled=False`` the customers' notes answer what an account without customers does), users, the
account, OAuth 2.0 token refresh with single-use refresh tokens, and the call recordings the way a
telephony provider would (``GET /recordings/<uniq>.mp3`` / ``.wav`` / ``.ogg``: real
audio files as long as the call, with the right ``Content-Type``, outside the API rate limit). Knobs inject
latency, faults (5xx, 429, truncated JSON), the 7-requests-per-second rate limit and expired
recording links.

Run it alone::

    python -m infra.stubs.amocrm --port 8101 --calls 200 [--latency-ms 50] [--fault-rate 0.05]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from infra.stubs.audio import Recording, make_recording
from infra.stubs.clinic_calls import (
    ACCOUNT_ID,
    ADMINISTRATORS,
    CLINIC_NAME,
    CLINIC_SUBDOMAIN,
    CLINIC_TIMEZONE,
    DEFAULT_SEED,
    ENTITY_TYPES,
    DemoCall,
    NoteFiling,
    generate_calls,
    to_note,
)
from infra.stubs.server import Response, StubRequestHandler, StubServer, serve_until_signal

DEFAULT_ACCESS_TOKEN: Final = "stub-long-lived-token"  # noqa: S105 - a stub credential
DEFAULT_CLIENT_ID: Final = "stub-client"
DEFAULT_CLIENT_SECRET: Final = "stub-secret"  # noqa: S105 - a stub credential
DEFAULT_REFRESH_TOKEN: Final = "stub-refresh-0"  # noqa: S105 - a stub credential
DEFAULT_AUTH_CODE: Final = "stub-auth-code"
MAX_LIMIT: Final = 250
DEFAULT_LIMIT: Final = 50
FAULT_KINDS: Final = ("500", "502", "503", "429", "malformed")
_MAX_BODY: Final = 1 << 20
_RECORDINGS_IN_MEMORY: Final = 8  # an hour of WAV is 58 MB: the rest are read back from the disk cache
_NOTES_PATH: Final = re.compile(r"^/api/v4/(leads|contacts|companies|customers)/notes/?$")
_NOTE_PATH: Final = re.compile(r"^/api/v4/(leads|contacts|companies|customers)(?:/(\d+))?/notes/(\d+)/?$")
#: what the customers' API answers in an account whose customers ("Покупатели") are off
CUSTOMERS_DISABLED_STATUS: Final = 402
CUSTOMERS_DISABLED_DETAIL: Final = "Customers are disabled in this account"
_USER_PATH: Final = re.compile(r"^/api/v4/users/(\d+)/?$")
_RECORDING_PATH: Final = re.compile(r"^/recordings/([A-Za-z0-9_-]+)\.(?:mp3|wav|ogg)$")
_NOTE_TYPE_KEY: Final = re.compile(r"^filter\[note_type\](?:\[\d*\])?$")
_ENTITY_ID_KEY: Final = re.compile(r"^filter\[entity_id\](?:\[\d*\])?$")
_HAL: Final = "application/hal+json"
_PROBLEM: Final = "application/problem+json"
_NGINX_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_NGINX_503: Final = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>"
    b"503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _json(status: int, payload: Any, content_type: str = "application/json") -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, f"{content_type}; charset=utf-8")


def _problem(status: int, detail: str, title: str | None = None, **extra: Any) -> Response:
    payload: dict[str, Any] = {
        "title": title or HTTPStatus(status).phrase,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
    }
    payload.update(extra)
    return _json(status, payload, _PROBLEM)


def _oauth_problem(status: int, hint: str, detail: str) -> Response:
    return _json(
        status,
        {
            "hint": hint,
            "title": "Некорректный запрос",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
            "status": status,
            "detail": detail,
        },
        _PROBLEM,
    )


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Handler(StubRequestHandler):
    server_version = "nginx"


class AmoCrmStub(StubServer):
    """The stub server. ``start()`` serves in a daemon thread; use as a context manager in tests."""

    handler_class = _Handler
    thread_name = "amocrm-stub"

    def __init__(
        self,
        *,
        calls: list[DemoCall] | None = None,
        demo_calls: int = 200,
        demo_days: int = 30,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token: str | None = DEFAULT_ACCESS_TOKEN,
        oauth_client_id: str = DEFAULT_CLIENT_ID,
        oauth_client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str | None = DEFAULT_REFRESH_TOKEN,
        auth_code: str | None = DEFAULT_AUTH_CODE,
        latency_ms: float = 0.0,
        fault_rate: float = 0.0,
        rate_limit: float | None = 7.0,
        broken_link_rate: float = 0.0,
        access_token_ttl: int = 86400,
        public_url: str | None = None,
        customers_enabled: bool = True,
        seed: int = DEFAULT_SEED,
    ) -> None:
        super().__init__(host=host, port=port)
        self._lock = threading.RLock()
        self._seed = seed
        initial = list(calls) if calls is not None else generate_calls(demo_calls, days=demo_days, seed=seed)
        self._calls: dict[int, DemoCall] = {}
        self._by_uniq: dict[str, int] = {}
        self._notes: dict[int, tuple[DemoCall, NoteFiling]] = {}  # every note (a call may have several)
        self._add(initial)
        self._recording_cache: OrderedDict[tuple[int, str], Recording] = OrderedDict()
        self._long_lived_token = access_token
        self._other_long_lived_tokens: set[str] = set()
        self._client_id = oauth_client_id
        self._client_secret = oauth_client_secret
        self._refresh_tokens: set[str] = {refresh_token} if refresh_token else set()
        self._revoked_refresh_tokens: set[str] = set()
        self._auth_codes: set[str] = {auth_code} if auth_code else set()
        self._used_auth_codes: set[str] = set()
        self._access_tokens: dict[str, float] = {}  # OAuth access token -> expiry (unix seconds)
        self._token_counter = 0
        self._rng = random.Random(f"amocrm-stub-faults:{seed}")
        self._window: deque[float] = deque()
        self.latency_ms = 0.0
        self.fault_rate = 0.0
        self.rate_limit: float | None = None
        self.broken_link_rate = 0.0
        self.access_token_ttl = 86400
        self.public_url: str | None = None
        self.customers_enabled = True
        self.configure(
            latency_ms=latency_ms,
            fault_rate=fault_rate,
            rate_limit=rate_limit,
            broken_link_rate=broken_link_rate,
            access_token_ttl=access_token_ttl,
            public_url=public_url,
            customers_enabled=customers_enabled,
        )
        self.reset_stats()

    # ------------------------------------------------------------------------------------ HTTP

    def _serve_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, size: int
    ) -> Response:
        return self.handle(method, target, headers, b"" if body is None else body)

    def _refuse_length(self, length: int) -> Response | None:
        if length < 0 or length > _MAX_BODY:
            return _problem(400, "Bad Content-Length", "Bad Request")
        return None

    def _crash_response(self, error: Exception) -> Response:
        return _problem(500, f"Stub error: {type(error).__name__}", "Internal Server Error")

    # ------------------------------------------------------------------------------------ data

    @property
    def calls(self) -> list[DemoCall]:
        """The distinct calls (a call filed on several entities is one call, with ``copies``)."""
        with self._lock:
            return [self._calls[key] for key in sorted(self._calls)]

    def served_calls(self) -> list[DemoCall]:
        """The calls whose notes the API serves now: without customers, those filed only on a customer are
        not there (a call on a lead and a customer still is)."""
        with self._lock:
            return [call for call in self.calls
                    if self.customers_enabled or any(f.entity_type != "customers" for f in call.filings)]

    @property
    def note_count(self) -> int:
        """The notes the API serves (with customers): one per filing of each call."""
        with self._lock:
            return len(self._notes)

    def call(self, note_id: int) -> DemoCall:
        with self._lock:
            return self._calls[note_id]

    def add_calls(self, calls: Iterable[DemoCall]) -> None:
        """Adds calls (a call with an existing note id replaces it)."""
        with self._lock:
            self._add(calls)

    def _add(self, calls: Iterable[DemoCall]) -> None:
        for call in calls:
            unknown = {f.entity_type for f in call.filings} - set(ENTITY_TYPES)
            if unknown:
                raise ValueError(f"unknown entity type {sorted(unknown)}")
            previous = self._calls.get(call.note_id)
            if previous is not None:
                self._by_uniq.pop(previous.uniq, None)
                for filing in previous.filings:
                    self._notes.pop(filing.note_id, None)
            self._calls[call.note_id] = call
            self._by_uniq[call.uniq] = call.note_id
            for filing in call.filings:
                self._notes[filing.note_id] = (call, filing)

    def update_note(self, note_id: int, **params: Any) -> DemoCall:
        """Changes the note's ``params`` and bumps ``updated_at`` to now (what a re-sync must pick up).

        ``duration``, ``call_status``, ``call_result``, ``phone``, ``uniq`` and ``call_responsible`` change
        the call; ``link=None`` removes the recording, a string ``link`` replaces it; any other key is
        stored in the note's raw ``params`` (``None`` removes it).
        """
        with self._lock:
            call = self._calls[note_id]
            changes: dict[str, Any] = {}
            extra = dict(call.extra_params)
            for key, value in params.items():
                if key in ("duration", "call_status", "call_result", "phone", "uniq"):
                    changes[key] = value
                elif key == "call_responsible":
                    changes["responsible_user_id"] = int(value)
                elif key == "link":
                    changes["has_recording"] = value is not None
                    if value is None:
                        extra.pop("link", None)
                    else:
                        extra["link"] = str(value)
                else:
                    extra[key] = value
            updated_at = max(int(time.time()), call.updated_at + 1)
            new = replace(call, **changes, extra_params=extra, updated_at=updated_at)
            self._add([new])
            return new

    # ----------------------------------------------------------------------------------- knobs

    def configure(self, **knobs: Any) -> None:
        """Changes ``latency_ms``, ``fault_rate``, ``rate_limit``, ``broken_link_rate``,
        ``access_token_ttl``, ``public_url`` or ``customers_enabled`` while running."""
        allowed = {"latency_ms", "fault_rate", "rate_limit", "broken_link_rate", "access_token_ttl", "public_url",
                   "customers_enabled"}
        unknown = set(knobs) - allowed
        if unknown:
            raise TypeError(f"unknown knobs: {sorted(unknown)}")
        for name in ("fault_rate", "broken_link_rate"):
            if name in knobs and not 0.0 <= float(knobs[name]) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        with self._lock:
            if "latency_ms" in knobs:
                self.latency_ms = max(0.0, float(knobs["latency_ms"]))
            if "fault_rate" in knobs:
                self.fault_rate = float(knobs["fault_rate"])
            if "rate_limit" in knobs:
                limit = knobs["rate_limit"]
                self.rate_limit = float(limit) if limit else None
                self._window.clear()
            if "broken_link_rate" in knobs:
                self.broken_link_rate = float(knobs["broken_link_rate"])
            if "access_token_ttl" in knobs:
                self.access_token_ttl = int(knobs["access_token_ttl"])
            if "public_url" in knobs:
                value = knobs["public_url"]
                self.public_url = str(value).rstrip("/") if value else None
            if "customers_enabled" in knobs:
                self.customers_enabled = bool(knobs["customers_enabled"])

    def is_link_broken(self, uniq: str) -> bool:
        """Whether the recording link has "expired" (deterministic; a link broken at rate r stays
        broken at any higher rate)."""
        digest = hashlib.sha256(f"{self._seed}:{uniq}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.broken_link_rate

    # ------------------------------------------------------------------------------------ auth

    def accept_token(self, token: str) -> None:
        """Accept ``token`` as a long-lived token too (a clinic registered with a token of its own)."""
        with self._lock:
            self._other_long_lived_tokens.add(token)

    def issue_authorization_code(self) -> str:
        """A fresh single-use code for ``grant_type=authorization_code``."""
        code = f"stub-code-{secrets.token_hex(8)}"
        with self._lock:
            self._auth_codes.add(code)
        return code

    @property
    def refresh_tokens(self) -> set[str]:
        """The refresh tokens currently valid (normally one: the latest)."""
        with self._lock:
            return set(self._refresh_tokens)

    def expire_access_tokens(self) -> None:
        """Expires every OAuth access token issued so far (the long-lived token keeps working)."""
        with self._lock:
            self._access_tokens = dict.fromkeys(self._access_tokens, 0.0)

    # ----------------------------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """``requests``: API requests received (``/api/v4/*``, ``/oauth2/*``); ``by_status``: their answers;
        ``rate_limited``: 429s from the rate limiter (injected 429s are in ``faults``); ``request_times``:
        monotonic arrival times of the API requests answered 2xx; ``recording_downloads``: recordings served."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": dict(self._by_status),
                "rate_limited": self._rate_limited,
                "request_times": list(self._request_times),
                "recording_downloads": self._recording_downloads,
                "recording_failures": self._recording_failures,
                "faults": dict(self._faults),
                "token_refreshes": self._token_refreshes,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_status: dict[int, int] = {}
            self._rate_limited = 0
            self._request_times: list[float] = []
            self._recording_downloads = 0
            self._recording_failures = 0
            self._faults: dict[str, int] = {}
            self._token_refreshes = 0

    # -------------------------------------------------------------------------- request handling

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answers one HTTP request (the server's handler threads call this)."""
        arrived = time.monotonic()
        split = urlsplit(target)
        path = split.path
        recording = _RECORDING_PATH.match(path)
        if recording:
            return self._recording(method, recording.group(1))
        if not (path.startswith(("/api/v4/", "/oauth2/")) or path == "/api/v4"):
            return _problem(404, f"No route for {path}", "Not Found")

        with self._lock:
            self._requests += 1
            limited = self._over_rate_limit(arrived)
            latency = self.latency_ms
            fault: str | None = None
            if (
                not limited
                and path.startswith("/api/v4")
                and self.fault_rate > 0
                and self._rng.random() < self.fault_rate
            ):
                fault = self._rng.choice(FAULT_KINDS)
                self._faults[fault] = self._faults.get(fault, 0) + 1
            html_503 = self._rng.random() < 0.5 if fault == "503" else False
        if latency > 0:
            time.sleep(latency / 1000.0)

        if limited:
            response = _problem(
                429, "Too many requests: at most 7 requests per second are allowed", "Too Many Requests"
            )
            response.headers["Retry-After"] = "1"
        elif fault == "500":
            response = _problem(500, "Internal server error", "Internal Server Error")
        elif fault == "502":
            response = Response(502, _NGINX_502, "text/html")
        elif fault == "503":
            response = (
                Response(503, _NGINX_503, "text/html")
                if html_503
                else _problem(503, "Service is temporarily unavailable", "Service Unavailable")
            )
        elif fault == "429":
            response = _problem(429, "Too many requests", "Too Many Requests")
        else:
            try:
                response = self._route(method, path, split.query, headers, body)
            except _BadRequest as error:
                response = _problem(400, error.detail, "Bad Request")
            if fault == "malformed":
                response = _malformed(response)

        with self._lock:
            self._by_status[response.status] = self._by_status.get(response.status, 0) + 1
            if limited:
                self._rate_limited += 1
            if 200 <= response.status < 300:
                self._request_times.append(arrived)
        return response

    def _over_rate_limit(self, now: float) -> bool:
        if not self.rate_limit:
            return False
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) + 1 > self.rate_limit:
            return True
        window.append(now)
        return False

    def _base_url(self, headers: Mapping[str, str]) -> str:
        if self.public_url:
            return self.public_url
        host = headers.get("host")
        if host and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            return f"http://{host}"
        return self.url

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Response:
        if path.startswith("/oauth2/"):
            if path.rstrip("/") != "/oauth2/access_token":
                return _problem(404, f"No route for {path}", "Not Found")
            if method != "POST":
                return _problem(405, "Use POST", "Method Not Allowed")
            return self._oauth(headers, body)

        unauthorized = self._check_auth(headers)
        if unauthorized is not None:
            return unauthorized
        if method not in ("GET", "HEAD"):
            return _problem(405, f"{method} is not supported by the stub", "Method Not Allowed")
        base = self._base_url(headers)

        notes = _NOTES_PATH.match(path) or _NOTE_PATH.match(path)
        if notes and notes.group(1) == "customers" and not self.customers_enabled:
            return _problem(CUSTOMERS_DISABLED_STATUS, CUSTOMERS_DISABLED_DETAIL)
        notes = _NOTES_PATH.match(path)
        if notes:
            return self._list_notes(notes.group(1), path, query, base)
        note = _NOTE_PATH.match(path)
        if note:
            with self._lock:
                filed = self._notes.get(int(note.group(3)))
            entity_id = note.group(2)
            if (
                filed is None
                or filed[1].entity_type != note.group(1)
                or (entity_id is not None and int(entity_id) != filed[1].entity_id)
            ):
                return _problem(404, "Note not found", "Not Found")
            return _json(200, to_note(filed[0], base, filed[1]), _HAL)
        stripped = path.rstrip("/")
        if stripped == "/api/v4/account":
            return _json(200, self._account(base), _HAL)
        if stripped == "/api/v4/users":
            return _json(200, self._users(base), _HAL)
        user = _USER_PATH.match(path)
        if user:
            found = [u for u in self._users(base)["_embedded"]["users"] if u["id"] == int(user.group(1))]
            return _json(200, found[0], _HAL) if found else _problem(404, "User not found", "Not Found")
        return _problem(404, f"No route for {path}", "Not Found")

    def _check_auth(self, headers: Mapping[str, str]) -> Response | None:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _problem(401, "Authorization header with a Bearer token is required", "Unauthorized")
        with self._lock:
            if self._long_lived_token is not None and secrets.compare_digest(token, self._long_lived_token):
                return None
            if any(secrets.compare_digest(token, other) for other in self._other_long_lived_tokens):
                return None
            expiry = self._access_tokens.get(token)
        if expiry is None:
            return _problem(401, "Invalid access token", "Unauthorized")
        if expiry <= time.time():
            return _problem(401, "Access token has expired", "Unauthorized")
        return None

    # --------------------------------------------------------------------------------- notes

    def _list_notes(self, entity_type: str, path: str, query: str, base: str) -> Response:
        pairs = parse_qsl(query, keep_blank_values=True)
        note_types: set[str] | None = None
        entity_ids: set[int] | None = None
        updated_from: int | None = None
        updated_to: int | None = None
        page = 1
        limit = DEFAULT_LIMIT
        for key, value in pairs:
            if _NOTE_TYPE_KEY.match(key):
                note_types = (note_types or set()) | {v.strip() for v in value.split(",") if v.strip()}
            elif _ENTITY_ID_KEY.match(key):
                entity_ids = (entity_ids or set()) | {_int(key, v) for v in value.split(",") if v.strip()}
            elif key in ("filter[updated_at][from]", "filter[updated_at]"):
                updated_from = _int(key, value)
            elif key == "filter[updated_at][to]":
                updated_to = _int(key, value)
            elif key == "page":
                page = _int(key, value)
                if page < 1:
                    raise _BadRequest("page must be >= 1")
            elif key == "limit":
                limit = _int(key, value)
                if limit < 1:
                    raise _BadRequest("limit must be >= 1")
                if limit > MAX_LIMIT:
                    raise _BadRequest(f"limit must not exceed {MAX_LIMIT}")
        with self._lock:
            selected = [
                (call, filing)
                for key, (call, filing) in sorted(self._notes.items())
                if filing.entity_type == entity_type
                and (note_types is None or call.note_type in note_types)
                and (entity_ids is None or filing.entity_id in entity_ids)
                and (updated_from is None or call.updated_at >= updated_from)
                and (updated_to is None or call.updated_at <= updated_to)
            ]
        chunk = selected[(page - 1) * limit : page * limit]
        if not chunk:
            return Response(204)
        kept = [(k, v) for k, v in pairs if k not in ("page", "limit")]

        def href(number: int) -> str:
            return f"{base}{path}?" + urlencode([*kept, ("page", str(number)), ("limit", str(limit))], safe="[]")

        links: dict[str, Any] = {"self": {"href": href(page)}}
        if page * limit < len(selected):
            links["next"] = {"href": href(page + 1)}
        if page > 1:
            links["prev"] = {"href": href(page - 1)}
        payload = {
            "_page": page,
            "_links": links,
            "_embedded": {"notes": [to_note(call, base, filing) for call, filing in chunk]},
        }
        return _json(200, payload, _HAL)

    # ------------------------------------------------------------------------------ account, users

    def _account(self, base: str) -> dict[str, Any]:
        return {
            "id": ACCOUNT_ID,
            "name": CLINIC_NAME,
            "subdomain": CLINIC_SUBDOMAIN,
            "created_at": 1_600_000_000,
            "created_by": ADMINISTRATORS[0].id,
            "updated_at": 1_700_000_000,
            "updated_by": ADMINISTRATORS[0].id,
            "current_user_id": ADMINISTRATORS[0].id,
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": "periodicity" if self.customers_enabled else "disabled",
            "is_unsorted_on": True,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
            "timezone": CLINIC_TIMEZONE,
            "_links": {"self": {"href": f"{base}/api/v4/account"}},
        }

    def _users(self, base: str) -> dict[str, Any]:
        users = [
            {
                "id": admin.id,
                "name": admin.name,
                "email": admin.email,
                "lang": "ru",
                "rights": {
                    "leads": {"view": "A", "edit": "A", "add": "A", "delete": "D", "export": "D"},
                    "is_admin": False,
                    "is_free": False,
                    "is_active": True,
                    "group_id": None,
                    "role_id": None,
                },
                "_links": {"self": {"href": f"{base}/api/v4/users/{admin.id}"}},
            }
            for admin in ADMINISTRATORS
        ]
        return {
            "_total_items": len(users),
            "_page": 1,
            "_page_count": 1,
            "_links": {"self": {"href": f"{base}/api/v4/users?page=1&limit={DEFAULT_LIMIT}"}},
            "_embedded": {"users": users},
        }

    # ------------------------------------------------------------------------------------ OAuth

    #: the integration's registered redirect URI: set it and a token request sending another is refused (401
    #: invalid_client, as amoCRM's OAuth server answers); None accepts any non-empty one
    oauth_redirect_uri: str | None = None

    def _oauth(self, headers: Mapping[str, str], body: bytes) -> Response:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json" or body.lstrip()[:1] == b"{":
                data = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                form = {str(k): str(v) for k, v in data.items() if v is not None}
            else:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return _oauth_problem(400, "Malformed request body", "The request body must be JSON or a form")
        grant = form.get("grant_type", "")
        if grant not in ("refresh_token", "authorization_code"):
            return _oauth_problem(
                400,
                "Check the `grant_type` parameter",
                "The authorization grant type is not supported by the authorization server",
            )
        if form.get("client_id") != self._client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self._client_secret
        ):
            return _oauth_problem(401, "Client authentication failed", "Клиент не прошёл аутентификацию")
        if not form.get("redirect_uri"):
            return _oauth_problem(
                400, "Check the `redirect_uri` parameter", "The request is missing a required parameter"
            )
        if self.oauth_redirect_uri is not None and form["redirect_uri"] != self.oauth_redirect_uri:
            return _oauth_problem(401, "Client authentication failed", "redirect_uri is not the integration's")
        with self._lock:
            if grant == "refresh_token":
                token = form.get("refresh_token", "")
                if not token:
                    return _oauth_problem(
                        400, "Check the `refresh_token` parameter", "The request is missing a required parameter"
                    )
                if token in self._revoked_refresh_tokens:
                    return _oauth_problem(400, "Token has been revoked", "The refresh token is invalid.")
                if token not in self._refresh_tokens:
                    return _oauth_problem(400, "Cannot decrypt the refresh token", "The refresh token is invalid.")
                self._refresh_tokens.discard(token)
                self._revoked_refresh_tokens.add(token)
            else:
                code = form.get("code", "")
                if code in self._used_auth_codes:
                    return _oauth_problem(
                        400, "Authorization code has been revoked", "The provided authorization grant is invalid"
                    )
                if code not in self._auth_codes:
                    return _oauth_problem(
                        400, "Cannot decrypt the authorization code", "The provided authorization grant is invalid"
                    )
                self._auth_codes.discard(code)
                self._used_auth_codes.add(code)
            self._token_counter += 1
            number = self._token_counter
            access = f"stub-access-{number}-{secrets.token_hex(12)}"
            refresh = f"stub-refresh-{number}-{secrets.token_hex(6)}"
            ttl = self.access_token_ttl
            self._access_tokens[access] = time.time() + ttl
            self._refresh_tokens.add(refresh)
            self._token_refreshes += 1
        return _json(200, {"token_type": "Bearer", "expires_in": ttl, "access_token": access, "refresh_token": refresh})

    # ------------------------------------------------------------------------------- recordings

    def _recording(self, method: str, uniq: str) -> Response:
        if method not in ("GET", "HEAD"):
            return _problem(405, "Use GET", "Method Not Allowed")
        with self._lock:
            note_id = self._by_uniq.get(uniq)
            call = self._calls.get(note_id) if note_id is not None else None
            if call is not None and not call.has_recording:
                call = None
            broken = call is not None and self.is_link_broken(uniq)
        if call is None or broken:
            with self._lock:
                self._recording_failures += 1
            if broken and int(hashlib.sha256(uniq.encode()).hexdigest(), 16) % 2:
                return Response(
                    403,
                    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                    b"<Message>Request has expired</Message></Error>",
                    "application/xml",
                )
            return Response(
                404,
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                b"<Message>The specified key does not exist.</Message></Error>",
                "application/xml",
            )
        recording = self._recording_of(call)
        if method == "GET":
            with self._lock:
                self._recording_downloads += 1
        return Response(
            200,
            recording.data,
            recording.content_type,
            {"Content-Disposition": f'attachment; filename="{uniq}.{recording.extension}"'},
        )

    def _recording_of(self, call: DemoCall) -> Recording:
        """The call's recording (generated once, then from the disk cache); the last few are kept in memory."""
        key = (call.note_id, call.uniq)
        with self._lock:
            recording = self._recording_cache.get(key)
            if recording is not None:
                self._recording_cache.move_to_end(key)
                return recording
        recording = make_recording(call)
        with self._lock:
            self._recording_cache[key] = recording
            while len(self._recording_cache) > _RECORDINGS_IN_MEMORY:
                self._recording_cache.popitem(last=False)
        return recording


def _int(key: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise _BadRequest(f"{key} must be an integer") from None


def _malformed(response: Response) -> Response:
    """The same answer with its JSON cut short, as a proxy dropping the connection mid-body would."""
    body = response.body[: max(1, len(response.body) // 2)] if response.body else b'{"_page":1,"_embedded":{"notes":['
    return Response(200, body, f"{_HAL}; charset=utf-8")


# ------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stubs.amocrm", description="A stub amoCRM API v4 server with a clinic's demo calls."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--calls", type=int, default=200, help="demo calls to generate")
    parser.add_argument("--days", type=int, default=30, help="days the demo calls span")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=7.0, help="API requests per second; 0 disables")
    parser.add_argument("--broken-link-rate", type=float, default=0.0)
    parser.add_argument("--access-token", default=DEFAULT_ACCESS_TOKEN)
    parser.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--public-url", default=None, help="base URL for links, e.g. http://host.docker.internal:8101")
    args = parser.parse_args(argv)

    stub = AmoCrmStub(
        demo_calls=args.calls,
        demo_days=args.days,
        seed=args.seed,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        rate_limit=args.rate_limit or None,
        broken_link_rate=args.broken_link_rate,
        access_token=args.access_token,
        refresh_token=args.refresh_token,
        oauth_client_id=args.client_id,
        oauth_client_secret=args.client_secret,
        public_url=args.public_url,
    )
    return serve_until_signal(
        stub, lambda stub: f"amoCRM stub listening on {stub.url} ({len(stub.calls)} calls, token {args.access_token})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
