"""The API key guard: which headers carry the key, and what each wrong one gets."""

from __future__ import annotations

import pytest

from edgeinfer.errors import Unauthenticated
from edgeinfer.serving.auth import ApiKeyGuard


def test_an_empty_x_api_key_does_not_hide_a_good_bearer_token() -> None:
    guard = ApiKeyGuard("secretkey")
    guard.check("Bearer secretkey", "")  # an empty X-API-Key is no key: it was "the API key is wrong"
    guard.check("Bearer secretkey", "   ")
    guard.check(None, "secretkey")
    with pytest.raises(Unauthenticated, match="needs an API key"):
        guard.check(None, "")
    with pytest.raises(Unauthenticated, match="the API key is wrong"):
        guard.check("Bearer secretkey", "wrong")  # a key given in X-API-Key is the one judged
