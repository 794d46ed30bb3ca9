"""The optional API key: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (gRPC: the same metadata)."""

from __future__ import annotations

import hmac

from edgeinfer.errors import Unauthenticated


class ApiKeyGuard:
    """Checks a request's credentials in constant time; with no key configured, lets everything in."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, authorization: str | None, api_key: str | None) -> None:
        if self._key is None:
            return
        given: str | None = api_key.strip() or None if api_key is not None else None  # empty: absent
        if given is None and authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                given = token.strip()
        if given is None:
            raise Unauthenticated(
                "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
        if not hmac.compare_digest(given.encode(), self._key):
            raise Unauthenticated("the API key is wrong")
