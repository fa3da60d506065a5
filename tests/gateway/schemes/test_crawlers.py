"""Verified search-engine crawlers end to end: a real gateway with the default policy, the
demo origin, client addresses presented through trusted_proxies / X-Forwarded-For, and
forward-confirmed reverse DNS against a real dnsmasq on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time

import pytest
from aiohttp import web

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.schemes.fcrdns import FcrDns, FcrDnsSettings
from tests.conftest import url_of
from tests.support.dnsserver import dnsmasq
from tests.support.servers import ROOT, free_port, serve_app, write_config

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
YANDEX = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"
TRUST = 'trusted_proxies = ["127.0.0.0/8"]'
POLICY = f'[policy]\nfile = "{ROOT / "policies" / "default.toml"}"\n'


async def fetch(http, gw, ua, ip, method="GET", path="/"):
    async with http.request(method, url_of(gw, path), headers={"User-Agent": ua, "X-Forwarded-For": ip}) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_googlebot_from_its_range_reads_free_as_verified_agent(upstream, gateway_factory, http):
    """Googlebot's UA from a published Googlebot address reaches the origin as verified-agent."""
    gw = await gateway_factory(upstream, extra=POLICY, server_extra=TRUST)
    status, _, body = await fetch(http, gw, GOOGLEBOT, "66.249.66.1")
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["PoP-Class"] == "verified-agent"
    assert seen["PoP-Subject"] == "googlebot"
    assert seen["PoP-Evidence"] == "crawler"
    status, _, _ = await fetch(http, gw, GOOGLEBOT, "2001:4860:4801:10::1", method="HEAD")
    assert status == 200


async def test_each_shipped_crawler_from_its_published_addresses(upstream, gateway_factory, http):
    """Every crawler with shipped ranges is verified from an address of its own document
    (Bingbot, Applebot, DuckDuckBot's single addresses) and challenged from another crawler's."""
    gw = await gateway_factory(upstream, extra=POLICY, server_extra=TRUST)
    cases = [
        (
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "157.55.39.10",
            "bingbot",
        ),
        ("Mozilla/5.0 (Applebot/0.1; +http://www.apple.com/go/applebot)", "17.241.208.161", "applebot"),
        ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "20.191.45.212", "duckduckbot"),
    ]
    for ua, ip, name in cases:
        status, _, body = await fetch(http, gw, ua, ip)
        assert status == 200, (name, status)
        assert json.loads(body)["headers"]["PoP-Subject"] == name
        status, _, _ = await fetch(http, gw, ua, "66.249.66.1")  # Googlebot's address
        assert status == 402, name


async def test_crawler_ua_from_another_address_is_challenged_as_suspicious(
    upstream, gateway_factory, http, tmp_path
):
    """The same UA from an address that is not Google's gets a 402, weighed as suspicious:
    an honest declared bot may do work, the impostor lands on the high-suspicion threshold
    (pay only: no puzzle)."""
    (tmp_path / "pz").write_bytes(b"p" * 40)
    puzzle = f'[puzzle]\nkeys = [{{kid = "p1", secret_file = "{tmp_path / "pz"}"}}]\n'
    gw = await gateway_factory(upstream, extra=POLICY + puzzle, server_extra=TRUST)
    status, ctype, body = await fetch(http, gw, GOOGLEBOT, "203.0.113.7")
    assert status == 402 and ctype.startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["reason"] == "crawler_unverified"
    assert "puzzle" not in {w["kind"] for w in problem["ways_out"]}
    status, _, body = await fetch(http, gw, "SomeBot/1.0", "203.0.113.7")
    assert status == 402
    honest = json.loads(body)
    assert honest["reason"] == "evidence_required"
    assert "puzzle" in {w["kind"] for w in honest["ways_out"]}
    # a Bingbot address does not make a Googlebot either
    status, _, _ = await fetch(http, gw, GOOGLEBOT, "157.55.39.10")
    assert status == 402


async def test_verified_crawler_does_not_write_for_free(upstream, gateway_factory, http):
    """Only reads are free: a POST from a verified crawler is charged like any verified agent."""
    gw = await gateway_factory(upstream, extra=POLICY, server_extra=TRUST)
    status, _, _ = await fetch(http, gw, GOOGLEBOT, "66.249.66.1", method="POST")
    assert status == 402


async def test_crawlers_off(upstream, gateway_factory, http):
    """[crawlers] enabled = false: Googlebot is a declared bot like any other."""
    gw = await gateway_factory(upstream, extra=POLICY + "[crawlers]\nenabled = false\n", server_extra=TRUST)
    status, _, body = await fetch(http, gw, GOOGLEBOT, "66.249.66.1")
    assert status == 402
    assert json.loads(body)["reason"] == "evidence_required"


async def test_ranges_refresh_from_a_file(upstream, gateway_factory, http, tmp_path):
    """A ranges file replaced on disk is re-read by the refresher; the new range verifies."""
    ranges = tmp_path / "bing.json"
    ranges.write_text(json.dumps({"prefixes": [{"ipv4Prefix": "157.55.39.0/24"}]}))
    extra = POLICY + f'[crawlers]\nrefresh = 3600\n[crawlers.ranges]\nbingbot = "{ranges}"\n'
    gw = await gateway_factory(upstream, extra=extra, server_extra=TRUST)
    bing = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
    assert (await fetch(http, gw, bing, "157.55.39.10"))[0] == 200
    assert (await fetch(http, gw, bing, "40.77.167.10"))[0] == 402
    ranges.write_text(json.dumps({"prefixes": [{"ipv4Prefix": "40.77.167.0/24"}]}))
    refresher = next(t for t in gw.gateway.registry.background if type(t).__name__ == "RangeRefresher")
    assert await refresher.refresh() >= 1
    assert (await fetch(http, gw, bing, "40.77.167.10"))[0] == 200
    ranges.write_text("{not json")
    await refresher.refresh()  # a broken source keeps its last good ranges
    assert (await fetch(http, gw, bing, "40.77.167.10"))[0] == 200


ZONE_PTR = {
    "198.51.100.10": "spider-198-51-100-10.yandex.com",  # confirmed both ways
    "198.51.100.11": "spider-198-51-100-11.yandex.com",  # forward points elsewhere
    "198.51.100.12": "spider.yandex.com.evil.test",  # not Yandex's domain
    "198.51.100.13": "crawl-198-51-100-13.googlebot.com",  # Googlebot outside the shipped ranges
    "2001:db8:1::10": "spider-v6.yandex.com",
}
ZONE_HOSTS = {
    "spider-198-51-100-10.yandex.com": ["198.51.100.10"],
    "spider-198-51-100-11.yandex.com": ["198.51.100.99"],
    "spider.yandex.com.evil.test": ["198.51.100.12"],
    "crawl-198-51-100-13.googlebot.com": ["198.51.100.13"],
    "spider-v6.yandex.com": ["2001:db8:1::10"],
}


def fcrdns(port: int, **kw) -> FcrDns:
    return FcrDns(FcrDnsSettings(servers=(("127.0.0.1", port),), **{"timeout": 2.0, **kw}))


async def test_fcrdns_against_dnsmasq_passes_and_fails_as_it_should():
    """Confirmed both ways passes; a forward mismatch, a foreign domain or no PTR fails;
    answers are cached (still answered once the server is gone)."""
    with dnsmasq(ZONE_PTR, ZONE_HOSTS) as port:
        check = fcrdns(port)
        yandex = ("yandex.ru", "yandex.net", "yandex.com")
        ip = ipaddress.ip_address
        assert await check.verify(ip("198.51.100.10"), yandex) == "spider-198-51-100-10.yandex.com"
        assert await check.verify(ip("2001:db8:1::10"), yandex) == "spider-v6.yandex.com"
        assert await check.verify(ip("198.51.100.11"), yandex) is None
        assert await check.verify(ip("198.51.100.12"), yandex) is None
        assert await check.verify(ip("198.51.100.50"), yandex) is None  # NXDOMAIN
        assert await check.verify(ip("198.51.100.13"), yandex) is None  # a Googlebot name
        both = await asyncio.gather(*(check.verify(ip("198.51.100.10"), yandex) for _ in range(5)))
        assert set(both) == {"spider-198-51-100-10.yandex.com"}
    # dnsmasq is gone: cached answers stand, a new address is not confirmed
    assert await check.verify(ip("198.51.100.10"), yandex) == "spider-198-51-100-10.yandex.com"
    assert await check.verify(ip("198.51.100.11"), yandex) is None
    assert await check.verify(ip("198.51.100.14"), yandex) is None


async def test_fcrdns_is_bounded_in_time():
    """A name server that never answers: not confirmed, within the timeout."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", free_port()))
    try:
        check = fcrdns(silent.getsockname()[1], timeout=0.3)
        started = time.monotonic()
        assert await check.verify(ipaddress.ip_address("198.51.100.10"), ("yandex.com",)) is None
        assert time.monotonic() - started < 1.5
    finally:
        silent.close()


async def test_fcrdns_in_the_gateway(upstream, gateway_factory, http):
    """With fcrdns = true, YandexBot (no published ranges) and a Googlebot outside the
    shipped ranges are verified through the test's DNS server; a mismatch is challenged."""
    with dnsmasq(ZONE_PTR, ZONE_HOSTS) as port:
        extra = POLICY + f'[crawlers]\nfcrdns = true\nnameservers = ["127.0.0.1:{port}"]\n'
        gw = await gateway_factory(upstream, extra=extra, server_extra=TRUST)
        status, _, body = await fetch(http, gw, YANDEX, "198.51.100.10")
        assert status == 200
        assert json.loads(body)["headers"]["PoP-Subject"] == "yandexbot"
        status, _, body = await fetch(http, gw, GOOGLEBOT, "198.51.100.13")
        assert status == 200
        assert json.loads(body)["headers"]["PoP-Subject"] == "googlebot"
        assert (await fetch(http, gw, YANDEX, "198.51.100.11"))[0] == 402
        assert (await fetch(http, gw, YANDEX, "198.51.100.12"))[0] == 402
        assert (await fetch(http, gw, GOOGLEBOT, "198.51.100.10"))[0] == 402  # a Yandex host


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[crawlers]\ncrawlers = ["nosuchbot"]\n', "crawlers.crawlers[0]: unknown crawler"),
        ('[crawlers.ranges]\ngooglebot = "/nonexistent.json"\n', "crawlers.ranges.googlebot: cannot read"),
        ('[crawlers]\nnameservers = ["127.0.0.1:99999"]\n', "crawlers.nameservers[0]"),
        ('[crawlers]\nfcrdns = "yes"\n', "crawlers.fcrdns"),
        ("[crawlers]\ncache_ttl = 0\n", "crawlers.cache_ttl"),
    ],
)
def test_config_problems_have_key_paths(tmp_path, extra, problem):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=extra))
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


async def test_ranges_refresh_from_a_url(upstream, gateway_factory, http):
    """A URL source is fetched as soon as the gateway runs, then on schedule; an answer
    that is not a good range document (404, garbage) keeps the last good ranges."""
    doc = {
        "body": json.dumps({"creationTime": "x", "prefixes": [{"ipv4Prefix": "40.77.167.0/24"}]}),
        "status": 200,
    }

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=doc["body"], status=doc["status"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/bingbot.json", serve)
    async with serve_app(app) as port:
        extra = POLICY + f'[crawlers.ranges]\nbingbot = "http://127.0.0.1:{port}/bingbot.json"\n'
        gw = await gateway_factory(upstream, extra=extra, server_extra=TRUST)
        bing = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
        for _ in range(100):  # the first fetch runs in the background at start
            if (await fetch(http, gw, bing, "40.77.167.10"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the URL's ranges were never fetched")
        refresher = next(t for t in gw.gateway.registry.background if type(t).__name__ == "RangeRefresher")
        doc["status"] = 404
        assert await refresher.refresh() == len(refresher.sources) - 1
        doc.update(status=200, body="[]")
        await refresher.refresh()
        assert (await fetch(http, gw, bing, "40.77.167.10"))[0] == 200
