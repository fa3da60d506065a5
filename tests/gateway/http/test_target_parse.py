"""request_target on arbitrary request lines: a Target with a normalized, safe path, or a
400/405 GatewayError, nothing else (the live-gateway sweep is test_target_sweep.py)."""

from __future__ import annotations

import re

from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.errors import BadRequest, MethodNotAllowed
from popgate.gateway.http.target import request_target
from popgate.policies.pathnorm import normalize_path

SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*\Z")


@given(
    method=st.sampled_from(["GET", "CONNECT", "OPTIONS"]),
    target=st.text(max_size=60)
    | st.text(alphabet="/.%2eEfF?#:@[]*\\abc", max_size=30)
    | st.text(st.characters(codec="utf-8") | st.sampled_from("\udcff\ud800/"), max_size=20).map("/".__add__),
    host=st.text(max_size=30),
)
def test_a_target_or_a_client_error(method, target, host):
    request = make_mocked_request(method, "/", headers={"Host": host})
    request._message = request._message._replace(path=target)  # the raw request-target
    try:
        t = request_target(request)
    except (BadRequest, MethodNotAllowed) as exc:
        assert exc.status in (400, 405)
        return
    assert t.path.startswith("/") and normalize_path(t.path) == t.path
    assert SAFE.match(t.forward), t.forward
    assert "#" not in t.forward
