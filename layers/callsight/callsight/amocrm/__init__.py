"""amoCRM (Kommo) API v4 adapter: call notes, users, OAuth token refresh, request pacing."""

from callsight.amocrm.client import ENTITY_TYPES, AmoCrmClient
from callsight.amocrm.ratelimit import RateLimiter
from callsight.amocrm.tokens import StoredToken, TokenProvider

__all__ = ["ENTITY_TYPES", "AmoCrmClient", "RateLimiter", "StoredToken", "TokenProvider"]
