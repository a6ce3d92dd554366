"""amoCRM (Kommo) API v4 adapter: call notes, users, OAuth token refresh, request pacing."""

from callsight.amocrm.client import ENTITY_TYPES, AmoCrmClient, NoteFetch, RawNote
from callsight.amocrm.ratelimit import RateLimiter
from callsight.amocrm.tokens import StoredToken, TokenProvider
from callsight.amocrm.transport import LockoutBackoff

__all__ = ["ENTITY_TYPES", "AmoCrmClient", "LockoutBackoff", "NoteFetch", "RateLimiter", "RawNote", "StoredToken",
           "TokenProvider"]
