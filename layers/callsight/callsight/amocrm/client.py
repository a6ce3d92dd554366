"""The amoCRM API v4 client: call notes of every entity type and the account's users, page by page.

Pages are untrusted: every element of a page's ``_embedded.notes`` comes back as it was sent (a RawNote, for
the sync's tolerant parsing), a page that cannot hold notes is counted under its reason, and paging always
ends: a next-page link already fetched, one to another host, or more pages than ``max_pages`` is an
AmoCrmPagingError naming the entity type. Notes are requested in ``order[id]=asc`` (documented for notes
lists by Kommo, and in the official PHP library's NotesFilter): ids never change, so a note edited while we
page keeps its place and new notes come last.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from callsight.amocrm.ratelimit import RateLimiter
from callsight.amocrm.tokens import TokenProvider
from callsight.amocrm.transport import NO_CONTENT, LockoutBackoff, Transport
from callsight.errors import AmoCrmAccountError, AmoCrmAuthError, AmoCrmPagingError

ENTITY_TYPES = ("leads", "contacts", "companies", "customers")
CALL_NOTE_TYPES = ("call_in", "call_out")
#: entity types an account may lack (customers, «Покупатели», are a feature the account enables): refused, they
#: are skipped with the reason instead of failing the sync
OPTIONAL_ENTITY_TYPES = frozenset({"customers"})
_OPTIONAL_REFUSALS = {402, 403, 404}
#: pages of one entity type's notes before we stop (500,000 notes at 250 a page)
MAX_PAGES = 2000


@dataclass(frozen=True)
class RawNote:
    """One element of a notes page's ``_embedded.notes`` as amoCRM sent it: untrusted, any JSON value."""

    entity_type: str
    payload: Any


@dataclass
class NoteFetch:
    """Every call note of a range, with what could not be read at the page level."""

    notes: list[RawNote] = field(default_factory=list)
    #: page-level problems by reason: ``bad_page`` (a page that is not an object, or whose ``_embedded`` is not
    #: an object or ``_embedded.notes`` not a list), ``bad_next_link`` (a next-page link that is not a URL)
    rejected: Counter[str] = field(default_factory=Counter)
    #: entity types not scanned, and why (e.g. customers not enabled in the account)
    skipped_entities: dict[str, str] = field(default_factory=dict)

    def add(self, other: NoteFetch) -> None:
        self.notes.extend(other.notes)
        self.rejected.update(other.rejected)
        self.skipped_entities.update(other.skipped_entities)


class AmoCrmClient:
    """Every request is paced by one shared limiter (amoCRM allows 7/s per integration), retried with backoff on
    429, 5xx, malformed JSON and network errors, and authorised by ``tokens`` (a 401 triggers one refresh);
    failures are errors an operator can act on (``callsight.amocrm.transport``)."""

    def __init__(self, base_url: str, tokens: TokenProvider, *, requests_per_second: float = 6.6,
                 page_size: int = 250, max_attempts: int = 6, max_pages: int = MAX_PAGES,
                 lockout: LockoutBackoff | None = None, http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.page_size = page_size
        self.max_pages = max_pages
        self.limiter = RateLimiter(requests_per_second, clock=clock, sleep=sleep)
        self._transport = Transport(self.base_url, tokens, limiter=self.limiter,
                                    http=http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)),
                                    max_attempts=max_attempts, lockout=lockout or LockoutBackoff(), clock=clock,
                                    sleep=sleep)

    @property
    def requests_sent(self) -> int:
        return self._transport.requests_sent

    # ------------------------------------------------------------------ API
    def fetch_call_notes(self, updated_from: int, updated_to: int | None = None) -> NoteFetch:
        """Call notes of every entity type updated in [from, to], fetched concurrently under the one limiter.
        The first entity type to fail stops the others and its error is raised."""
        stop = threading.Event()

        def scan(entity_type: str) -> NoteFetch:
            try:
                return self.entity_notes(entity_type, updated_from, updated_to, stop=stop)
            except BaseException:
                stop.set()
                raise

        fetch = NoteFetch()
        with ThreadPoolExecutor(len(ENTITY_TYPES), thread_name_prefix="amocrm") as pool:
            for part in [pool.submit(scan, entity_type) for entity_type in ENTITY_TYPES]:
                fetch.add(part.result())
        return fetch

    def entity_notes(self, entity_type: str, updated_from: int, updated_to: int | None = None, *,
                     stop: threading.Event | None = None) -> NoteFetch:
        """Every call note (in and out) of one entity type updated in [from, to]."""
        params: dict[str, Any] = {
            "filter[note_type][]": list(CALL_NOTE_TYPES),
            "filter[updated_at][from]": updated_from,
            "order[id]": "asc",
            "limit": self.page_size,
            "page": 1,
        }
        if updated_to is not None:
            params["filter[updated_at][to]"] = updated_to
        found = NoteFetch()
        pages = 0
        try:
            for body in self._pages(f"{entity_type} notes", f"{self.base_url}/api/v4/{entity_type}/notes", params,
                                    found.rejected, stop):
                pages += 1
                notes = _page_notes(body)
                if notes is None:
                    found.rejected["bad_page"] += 1
                else:
                    found.notes.extend(RawNote(entity_type, note) for note in notes)
        except (AmoCrmAuthError, AmoCrmAccountError) as exc:
            if pages or entity_type not in OPTIONAL_ENTITY_TYPES or exc.status not in _OPTIONAL_REFUSALS:
                raise
            found.skipped_entities[entity_type] = (f"not available in this account: amoCRM answered HTTP "
                                                   f"{exc.status} to /api/v4/{entity_type}/notes")
        return found

    def users(self) -> dict[int, str]:
        """Account users (the administrators) by id -> name; entries that are not objects or have no usable id
        are skipped."""
        names: dict[int, str] = {}
        for body in self._pages("users", f"{self.base_url}/api/v4/users", {"limit": 250}, Counter(), None):
            embedded = body.get("_embedded")
            users = embedded.get("users") if isinstance(embedded, dict) else None
            for user in users if isinstance(users, list) else ():
                user_id = _user_id(user.get("id")) if isinstance(user, dict) else None
                if user_id is not None:
                    name = user.get("name")
                    names[user_id] = name.strip() if isinstance(name, str) else ""
        return names

    # ------------------------------------------------------------------ paging
    def _pages(self, what: str, url: str, params: dict[str, Any] | None, rejected: Counter[str],
               stop: threading.Event | None) -> Iterator[dict[str, Any]]:
        """The pages from ``url`` on through ``_links.next.href``: object pages are yielded, others counted."""
        fetched: dict[tuple[Any, ...], int] = {}
        number = 0
        while stop is None or not stop.is_set():
            number += 1
            fetched[_page_key(url, params)] = number
            body = self._transport.get_json(url, params)
            if body is NO_CONTENT:
                return
            if not isinstance(body, dict):
                rejected["bad_page"] += 1
                return
            yield body
            href = _next_href(body, rejected)
            if href is None:
                return
            following = urljoin(url, href)
            if _origin(following) != self._origin:
                host = urlsplit(following).hostname or "no host"
                raise AmoCrmPagingError(f"amoCRM's {what}: the next-page link of page {number} points to another "
                                        f"host ({host}); refusing to follow it")
            seen = fetched.get(_page_key(following, None))
            if seen is not None:
                raise AmoCrmPagingError(f"amoCRM's {what}: the next-page link of page {number} leads back to page "
                                        f"{seen}, already fetched; paging loops, stopped after {number} pages")
            if number >= self.max_pages:
                raise AmoCrmPagingError(f"amoCRM's {what} have more than {self.max_pages} pages; stopped there: "
                                        "sync a shorter range")
            url, params = following, None  # the link carries the query; params would replace it


def _page_notes(body: dict[str, Any]) -> list[Any] | None:
    """The page's notes ([] for none: no ``_embedded``, ``notes: null``); None when the page cannot hold any."""
    embedded = body.get("_embedded")
    if embedded is None:
        return []
    if not isinstance(embedded, dict):
        return None
    notes = embedded.get("notes")
    if notes is None:
        return []
    return notes if isinstance(notes, list) else None


def _next_href(body: dict[str, Any], rejected: Counter[str]) -> str | None:
    links = body.get("_links")
    following = links.get("next") if isinstance(links, dict) else None
    href = following.get("href") if isinstance(following, dict) else None
    if href is None:
        return None
    if not isinstance(href, str) or not href.strip():
        rejected["bad_next_link"] += 1
        return None
    return href.strip()


def _user_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _page_key(url: str, params: dict[str, Any] | None) -> tuple[Any, ...]:
    """A page's identity: its URL with the query (ours, or the link's) in a canonical order."""
    full = httpx.URL(url, params=params) if params else httpx.URL(url)
    parts = urlsplit(str(full))
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), query
