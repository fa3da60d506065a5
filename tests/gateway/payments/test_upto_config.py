"""``[x402.upto]`` config, and forward-auth: popgate only sees the origin's usage
report inline, so ``mode = "auth"`` with upto is refused at start-up, and in
inline mode a forward-auth call for an upto route is handed to popgate inline
(nginx subrequest) or never offered / takes upto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from x402.http.utils import decode_payment_required_header

from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.facilitator import running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import free_port, write_config
from tests.support.upto import PRICE, signed_payment, toml

AUTH = "/.well-known/popgate/auth"
KEY = "0x" + "7a" * 32
TRUST_LOOPBACK = 'trusted_proxies = ["127.0.0.1/32"]'


def _problems(tmp: Path, extra: str) -> str:
    try:
        load_config(write_config(tmp, "http://127.0.0.1:1", extra=extra))
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("accepted")


def test_routes_parse_to_atomic_units(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=toml("http://127.0.0.1:2")))
    upto = cfg.features.x402.upto  # type: ignore[union-attr]
    assert upto is not None and upto.facilitator_address == "0x" + "fa" * 20
    route = upto.routes["paid"]
    assert (route.usage_header, route.unit_price, route.max_amount) == ("X-Usage-Tokens", 100, 5000)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (('facilitator_address = "0xfa', 'facilitator_address = "0xzz'), "x402.upto.facilitator_address"),
        (
            ('usage_header = "X-Usage-Tokens"', 'usage_header = "PoP-Usage"'),
            "x402.upto.routes.paid.usage_header",
        ),
        (
            ('usage_header = "X-Usage-Tokens"', 'usage_header = "Content-Length"'),
            "x402.upto.routes.paid.usage_header",
        ),
        (
            ('usage_header = "X-Usage-Tokens"', 'usage_header = "bad header"'),
            "x402.upto.routes.paid.usage_header",
        ),
        (('unit_price = "0.0001"', "unit_price = 0.0001"), "x402.upto.routes.paid.unit_price"),
        (('unit_price = "0.0001"', 'unit_price = "0.0000001"'), "x402.upto.routes.paid.unit_price"),
        (('max = "0.005"', 'max = "0.00001"'), "x402.upto.routes.paid.max"),
        (('max = "0.005"', 'maximum = "0.005"'), "x402.upto.routes.paid.maximum"),
        (("[x402.upto.routes.paid]", "[x402.upto.other]"), "x402.upto.routes"),
    ],
)
def test_problems_name_their_key(tmp_path: Path, change: tuple[str, str], where: str) -> None:
    text = toml("http://127.0.0.1:2").replace(*change)
    assert where in _problems(tmp_path, text)


def test_a_route_the_policy_does_not_have(tmp_path: Path) -> None:
    text = _problems(tmp_path, puzzle_extra(tmp_path) + toml("http://127.0.0.1:2"))
    assert "x402.upto.routes.paid: no policy route 'paid'" in text


def test_auth_mode_refuses_upto(tmp_path: Path) -> None:
    (tmp_path / "k1").write_bytes(b"k" * 40)
    path = tmp_path / "auth.toml"
    path.write_text(f"""
[server]
mode = "auth"
listen = "127.0.0.1:{free_port()}"
admin = "127.0.0.1:{free_port()}"
{TRUST_LOOPBACK}
[store]
url = "memory://"
[sessions]
keys = [{{kid = "k1", secret_file = "{tmp_path / "k1"}"}}]
{toml("http://127.0.0.1:2")}""")
    with pytest.raises(ConfigError, match=r'x402\.upto: .*it needs \[server\] upstream \(mode = "inline"\)'):
        load_config(path)


async def test_forward_auth_hands_upto_routes_inline(gateway_factory: Any, upstream: str, http: Any) -> None:
    async with running() as (fac, st):
        gw = await gateway_factory(upstream, extra=toml(fac), server_extra=TRUST_LOOPBACK)
        gw.gateway.policy.policy = ChargePolicy(PRICE)
        call = {
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example",
            "X-Forwarded-Uri": "/paid/llm",
            "X-Forwarded-For": "203.0.113.7",
        }
        # nginx auth_request: the upto route goes through popgate inline, before any charge
        async with http.get(url_of(gw, AUTH), headers={**call, "X-Popgate-Auth": "subrequest"}) as r:
            assert (r.status, r.headers["X-Popgate-Decision"]) == (403, "inline")
        # an edge that cannot hand off: upto is neither offered nor taken (no answer to settle from)
        async with http.get(url_of(gw, AUTH), headers=call) as r:
            assert r.status == 402
            assert [
                a.scheme for a in decode_payment_required_header(r.headers["PAYMENT-REQUIRED"]).accepts
            ] == ["exact"]
        async with http.get(
            url_of(gw, AUTH), headers={**call, "PAYMENT-SIGNATURE": signed_payment(KEY)}
        ) as r:
            assert r.status == 402
            assert decode_payment_required_header(r.headers["PAYMENT-REQUIRED"]).error == "unsupported_scheme"
        assert st.calls["verify"] == 0


def test_the_readme_example_loads(tmp_path: Path) -> None:
    """README's [x402.upto] block, under a minimal [x402], loads as documented."""
    from tests.support.servers import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("test_upto_config.py::test_the_readme_example_loads -->\n```toml\n", 1)[1]
    block = block.split("```", 1)[0]
    x402 = (
        '[x402]\npay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"\nfacilitator = "http://127.0.0.1:2"\n'
    )
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=x402 + block))
    upto = cfg.features.x402.upto  # type: ignore[union-attr]
    assert upto is not None
    assert upto.routes["llm"].usage_header == "X-Usage-Tokens"
    assert (upto.routes["llm"].unit_price, upto.routes["llm"].max_amount) == (2, 50_000)
