"""Domain errors. Their class names are the error names Step Functions Retry/Catch match on."""

from __future__ import annotations

from pydantic import ValidationError


class CallsightError(Exception):
    """Base of the errors Callsight raises on purpose."""


class ClientNotFound(CallsightError):
    def __init__(self, client_id: str) -> None:
        super().__init__(f"client '{client_id}' is not registered")
        self.client_id = client_id


class ProcessAlreadyRunning(CallsightError):
    def __init__(self, client_id: str, process: str, execution_name: str, start_date: str, end_date: str) -> None:
        super().__init__(
            f"client '{client_id}' already runs the {process} process "
            f"({start_date}..{end_date}, execution {execution_name}); wait until it finishes"
        )
        self.process = process
        self.execution_name = execution_name


class NotAuthenticated(CallsightError):
    """No valid API key (HTTP 401). ``reason`` says why, for the log only (missing, malformed, unknown, wrong
    secret, revoked): the answer never does, and neither ever quotes the key."""

    def __init__(self, reason: str = "missing", *, key_id: str | None = None) -> None:
        super().__init__(f"not authenticated: {reason}")
        self.reason = reason
        self.key_id = key_id


class ClientAccessDenied(CallsightError):
    """The request's API key may not use this clinic (HTTP 403)."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"this API key may not use clinic {client_id}")
        self.client_id = client_id


class ApiKeyNotFound(CallsightError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with key_id {key_id} (callsight-admin list-keys lists them)")
        self.key_id = key_id


class TooManyStarts(CallsightError):
    """The clinic started its ``limit`` runs of this hour (HTTP 429): the next start is allowed at ``retry_at``
    (ISO UTC), ``retry_after`` seconds from now."""

    def __init__(self, client_id: str, limit: int, retry_at: str, retry_after: int) -> None:
        super().__init__(f"client '{client_id}' reached its limit of {limit} starts per hour; the next start is "
                         f"allowed at {retry_at}")
        self.client_id = client_id
        self.limit = limit
        self.retry_at = retry_at
        self.retry_after = retry_after


class ConfirmationRequired(CallsightError):
    """A ``force`` start would re-run more calls than need no confirmation, and ``confirm_calls`` did not confirm
    as many (HTTP 409)."""

    def __init__(self, client_id: str, days: str, *, calls: int, threshold: int, confirmed: int | None) -> None:
        super().__init__(f"force re-runs {calls} calls of {client_id} {days} (more than {threshold}): "
                         f"send confirm_calls: {calls} to go ahead")
        self.calls = calls
        self.confirmed = confirmed


class AmoCrmError(CallsightError):
    """amoCRM answered in a way we cannot use (after retries); ``status`` is its HTTP status, when one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AmoCrmUnavailable(AmoCrmError):
    """amoCRM kept answering 429/5xx or malformed JSON after our retries: worth a later retry."""


class AmoCrmAuthError(AmoCrmError):
    """amoCRM rejected the credentials (401) or refused access (403: the user's rights, an IP allow-list): an
    operator must act. Not retried."""


class AmoCrmAccountError(AmoCrmError):
    """The amoCRM account cannot serve us: not paid (402), or no such account at the base URL (404). Not retried."""


class AmoCrmLockedOut(AmoCrmError):
    """amoCRM kept refusing every request (403) after rate limiting: its temporary IP lockout outlasted our
    backoff. Retried once, much later (sync.asl.json)."""


class AmoCrmPagingError(AmoCrmError):
    """amoCRM's pages do not end: a next-page link already fetched, one to another host, or more pages than the
    cap. Not retried: the same data would loop again."""


class CallFailed(CallsightError):
    """One call could not go through a step; the reason is recorded on that call, the run goes on."""


class RecordingDownloadError(CallFailed):
    """One recording could not be downloaded."""


def validation_problems(exc: ValidationError, *, whole: str = "input") -> str:
    """What failed validation, field by field, never quoting the input (it may hold secrets)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in exc.errors(include_input=False))
