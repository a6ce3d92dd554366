"""A tiny amoCRM look-alike for tests: a real HTTP server whose answers the test writes.

Unlike the demo stub (``infra.stubs.amocrm``) it invents nothing: each entity type's notes pages are the raw
JSON bodies the test gives (any shapes), served in order for ``?page=1, 2, ...`` and 204 after the last;
``{base}`` in any string of a body becomes the server's URL, so next-page links can point at it::

    with LookalikeAmoCrm(notes={"leads": [page([note], next_href="{base}/api/v4/leads/notes?page=2"),
                                          page([other])]},
                         users=[{"id": 1, "name": "Анна"}, "not a user"],
                         answers={"/api/v4/customers/notes": Answer(402, problem(402, "Customers are off"))}) as amo:
        client = AmoCrmClient(amo.url, StaticToken(TOKEN))

``answers`` maps a path (``"*"``: every API path) to an Answer given to every request for it; ``queue()`` adds
one-shot answers served first, in order. An API request without ``Bearer <token>`` gets 401 (other paths, such
as recordings, need none). Every request is
recorded (``requests``), with its monotonic arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from infra.stubs.server import Response, StubServer

TOKEN = "lookalike-token-0123456789"


@dataclass(frozen=True)
class Answer:
    """A scripted answer: a JSON value (dumped), or bytes/str sent as they are."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str
    at: float


def page(notes: Any, *, next_href: Any = None) -> dict[str, Any]:
    """A notes page shaped as amoCRM sends it (``next_href`` may use ``{base}``)."""
    body: dict[str, Any] = {"_links": {}, "_embedded": {"notes": notes}}
    if next_href is not None:
        body["_links"]["next"] = {"href": next_href}
    return body


def problem(status: int, detail: str) -> dict[str, Any]:
    """amoCRM's problem+json error body."""
    return {"title": HTTPStatus(status).phrase, "type": f"https://httpstatus.es/{status}", "status": status,
            "detail": detail}


class LookalikeAmoCrm(StubServer):
    thread_name = "amocrm-lookalike"

    def __init__(self, *, notes: Mapping[str, list[Any]] | None = None, users: Any = (),
                 answers: Mapping[str, Answer] | None = None, token: str = TOKEN, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.notes = {entity: list(pages) for entity, pages in (notes or {}).items()}
        self.users = users
        self.answers = dict(answers or {})
        self.token = token
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Answer]] = {}
        self._requests: list[Request] = []

    def queue(self, path: str, *answers: Answer) -> None:
        """One-shot answers for ``path`` (``"*"``: any API path), served before anything else, in order."""
        with self._lock:
            self._queued.setdefault(path, deque()).extend(answers)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # ------------------------------------------------------------------ serving
    def _serve_request(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None,
                       size: int) -> Response:
        split = urlsplit(target)
        path, query = split.path.rstrip("/") or "/", parse_qs(split.query, keep_blank_values=True)
        authorization = headers.get("authorization", "")
        with self._lock:
            self._requests.append(Request(method, path, query, authorization, time.monotonic()))
            scripted = self._scripted(path)
        if path.startswith(("/api/", "/oauth2/")) and authorization != f"Bearer {self.token}":
            return self._answer(Answer(401, problem(401, "Invalid access token")))
        if scripted is not None:
            return self._answer(scripted)
        parts = path.strip("/").split("/")  # api, v4, <entity>, notes
        if len(parts) == 4 and parts[:2] == ["api", "v4"] and parts[3] == "notes":
            pages = self.notes.get(parts[2], [])
            number = int((query.get("page") or ["1"])[0])
            if not 1 <= number <= len(pages):
                return Response(204)
            return self._answer(Answer(200, pages[number - 1]))
        if path == "/api/v4/users":
            return self._answer(Answer(200, {"_embedded": {"users": self.users}}))
        if path == "/api/v4/account":
            return self._answer(Answer(200, {"id": 1, "subdomain": "lookalike"}))
        return self._answer(Answer(404, problem(404, f"No route for {path}")))

    def _scripted(self, path: str) -> Answer | None:
        for key in (path, "*"):
            queued = self._queued.get(key)
            if queued:
                return queued.popleft()
        return self.answers.get(path) or self.answers.get("*")

    def _answer(self, answer: Answer) -> Response:
        if isinstance(answer.body, bytes | str):
            data = answer.body.encode() if isinstance(answer.body, str) else answer.body
            content_type = answer.content_type or "text/html"
        else:
            data = json.dumps(_with_base(answer.body, self.url), ensure_ascii=False).encode()
            content_type = answer.content_type or (
                "application/hal+json" if answer.status < 400 else "application/problem+json")
        return Response(answer.status, data, content_type, dict(answer.headers))

    def _refuse_length(self, length: int) -> Response | None:
        return None if 0 <= length <= 1 << 20 else Response(400, b"bad length", "text/plain")

    def _crash_response(self, error: Exception) -> Response:
        return Response(500, f"look-alike error: {type(error).__name__}".encode(), "text/plain")


def _with_base(value: Any, base: str) -> Any:
    if isinstance(value, str):
        return value.replace("{base}", base)
    if isinstance(value, list):
        return [_with_base(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _with_base(v, base) for k, v in value.items()}
    return value
