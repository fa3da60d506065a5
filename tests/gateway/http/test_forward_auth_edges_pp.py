"""The shipped edge configs (nginx, Caddy) and the headers delegations and Privacy Pass add:
a client-sent PoP-Backed-By and a PrivateToken credential never reach the origin."""

from __future__ import annotations

from tests.conftest import session_token
from tests.gateway.http.test_forward_auth_edges import stack  # noqa: F401 (the fixture: both edges)
from tests.support.edges import UA


async def test_client_backed_by_and_private_token_never_reach_the_origin(stack, http):  # noqa: F811
    """A human session holder sending its own PoP-Backed-By and a PrivateToken Authorization:
    the origin sees popgate's verdict only, and neither header."""
    token = session_token(stack.auth, "human", subject="human:pp1")
    headers = {
        **UA,
        "Cookie": f"popgate_session={token}",
        "PoP-Backed-By": "human:someone-else",
        "Authorization": "PrivateToken token=AAIA",
    }
    async with http.get(stack.url("/v1/things"), headers=headers) as r:
        assert r.status == 200
        seen = await r.json()
    names = {k.lower() for k in seen["headers"]}
    assert "pop-backed-by" not in names and "authorization" not in names
    assert {k.lower(): v for k, v in seen["headers"].items()}["pop-class"] == "human"
