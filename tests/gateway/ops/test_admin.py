"""The admin listener: metrics with bounded labels, health and readiness."""

from __future__ import annotations

from tests.conftest import admin_url, session_token, url_of
from tests.support.servers import free_port


async def test_metrics_count_requests_by_class_and_decision(upstream, gateway_factory, http):
    """/metrics shows requests by class and decision, and no raw subject or IP."""
    gw = await gateway_factory(upstream)
    token = session_token(gw, "human", subject="human:secret-pseudonym")
    for _ in range(3):
        async with http.get(url_of(gw, "/a"), headers={"Authorization": f"PoP {token}"}) as r:
            assert r.status == 200
    async with http.get(url_of(gw, "/b")) as r:
        assert r.status == 402
    async with http.get(admin_url(gw, "/metrics")) as r:
        assert r.status == 200
        text = await r.text()
    assert 'popgate_requests_total{decision="allow",klass="human"} 3.0' in text
    assert 'popgate_requests_total{decision="challenge",klass="unknown"} 1.0' in text
    assert "secret-pseudonym" not in text and "127.0.0.1" not in text


async def test_healthz_and_readyz(upstream, gateway_factory, http):
    """healthz answers; readyz is 200 with store and upstream up."""
    gw = await gateway_factory(upstream)
    async with http.get(admin_url(gw, "/healthz")) as r:
        assert r.status == 200
    async with http.get(admin_url(gw, "/readyz")) as r:
        assert r.status == 200
        assert await r.json() == {"store": "ok", "upstream": "ok"}


async def test_readyz_fails_when_upstream_or_store_down(gateway_factory, http):
    """readyz is 503 and says which dependency is down."""
    gw = await gateway_factory(f"http://127.0.0.1:{free_port()}", store=f"redis://127.0.0.1:{free_port()}/0")
    async with http.get(admin_url(gw, "/readyz")) as r:
        assert r.status == 503
        body = await r.json()
    assert body["upstream"].startswith("unreachable") and body["store"].startswith("unavailable")


async def test_admin_is_not_on_the_proxy_port(upstream, gateway_factory, http):
    """/metrics on the public port is just proxied/challenged, never the registry."""
    gw = await gateway_factory(upstream)
    async with http.get(url_of(gw, "/metrics")) as r:
        assert r.status == 402


async def test_admin_index_and_a_404_that_says_what_is_off(upstream, gateway_factory, http):
    """Without [credits]: `/` lists what the admin listener serves, and /admin/... answers a
    problem+json 404 naming the table that turns the credits API on (not a bare 404)."""
    gw = await gateway_factory(upstream)
    async with http.get(admin_url(gw, "/")) as r:
        assert r.status == 200
        routes = (await r.json())["routes"]
    assert {"GET /metrics", "GET /healthz", "GET /readyz"} <= set(routes)
    assert not any("/admin/credits" in x for x in routes)
    async with http.post(admin_url(gw, "/admin/credits/keys"), json={"amount_usd": "1.00"}) as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
        body = await r.json()
    assert "[credits] admin_token" in body["detail"] and body["routes"] == routes
    async with http.get(admin_url(gw, "/nope")) as r:
        assert r.status == 404 and "detail" not in await r.json()
