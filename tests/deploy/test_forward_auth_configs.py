"""The shipped Traefik and Envoy configs (not installable here, so not run) ask the
endpoint popgate serves, copy exactly popgate's identity headers, and keep the
auth endpoint away from clients. nginx and Caddy run for real in
tests/gateway/http/test_forward_auth_edges.py."""

from __future__ import annotations

import yaml

from popgate.gateway.http.forward_auth import AUTH_PATH
from popgate.gateway.ops.config import load_config
from tests.support.servers import ROOT

IDENTITY = ["PoP-Class", "PoP-Subject", "PoP-Evidence", "PoP-Charged"]


def test_traefik_file_provider_config() -> None:
    http = yaml.safe_load((ROOT / "deploy/forward-auth/traefik-dynamic.yml").read_text())["http"]
    auth = http["middlewares"]["popgate-auth"]["forwardAuth"]
    assert auth["address"].endswith(AUTH_PATH)
    assert auth["authResponseHeaders"] == IDENTITY
    assert auth["trustForwardHeader"] is False
    reset = http["middlewares"]["popgate-identity-reset"]["headers"]["customRequestHeaders"]
    assert reset == dict.fromkeys(IDENTITY, "")
    app = http["routers"]["app"]["middlewares"]
    assert (
        app.index("popgate-identity-reset") < app.index("popgate-auth") < app.index("popgate-strip-evidence")
    )
    hidden = http["routers"]["popgate-auth-hidden"]
    assert (
        AUTH_PATH in hidden["rule"] and hidden["priority"] > http["routers"]["popgate-endpoints"]["priority"]
    )


def test_envoy_ext_authz_config() -> None:
    conf = yaml.safe_load((ROOT / "deploy/forward-auth/envoy.yaml").read_text())
    hcm = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters.index("envoy.filters.http.header_mutation") < filters.index("envoy.filters.http.ext_authz")
    authz = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")[
        "typed_config"
    ]
    assert authz["failure_mode_allow"] is False
    service = authz["http_service"]
    assert service["path_prefix"] == AUTH_PATH
    copied = [p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]]
    assert copied == IDENTITY
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["prefix"] == AUTH_PATH and routes[0]["direct_response"]["status"] == 404


def test_forward_auth_compose_variant() -> None:
    """deploy/forward-auth/compose.yaml: nginx (the shipped config, addresses rewritten at start),
    popgate in auth mode with a valid config, Redis; only nginx is published, on loopback."""
    fa = ROOT / "deploy/forward-auth"
    doc = yaml.safe_load((fa / "compose.yaml").read_text())
    s = doc["services"]
    assert set(s) == {"nginx", "popgate", "redis", "upstream"}
    script = s["nginx"]["command"][-1]
    conf = (fa / "nginx-popgate-auth.conf").read_text()
    for old in ("server 127.0.0.1:8080;", "server 127.0.0.1:8000;", "listen 80;"):
        assert old in script and old in conf, old
    for name, svc in s.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            assert (fa / src).exists() if src.startswith(".") else src in doc["volumes"], (name, src)
        assert set(svc.get("depends_on", [])) <= set(s)
        assert all(p.startswith("127.0.0.1:") for p in svc.get("ports", [])), name
    assert [k for k, v in s.items() if v.get("ports")] == ["nginx"]
    assert s["popgate"]["volumes"] == ["./popgate.toml:/etc/popgate/popgate.toml:ro"]
    key = "k" * 64
    env = {"POPGATE_SESSION_KEY": key, "POPGATE_SUBJECT_KEY": key, "POPGATE_CHALLENGE_KEY": key}
    config = load_config(fa / "popgate.toml", env=env)
    assert config.mode == "auth" and config.upstream is None
    net = doc["networks"]["popgate"]["ipam"]["config"][0]["subnet"]
    assert [str(n) for n in config.trusted_proxies] == [net], "only the compose network may ask"
