"""Table-driven policy matching: the shipped default and a custom policy."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from popgate.policies import loader
from popgate.policies.holder import PolicyHolder
from popgate.policies.loader import PolicyError
from popgate.policies.model import RequestView

DEFAULT = loader.load(Path(loader.__file__).parent / "default.toml")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"


def view(
    path: str = "/",
    method: str = "GET",
    host: str = "api.example.com",
    ua: str = BROWSER,
    ip: str = "203.0.113.9",
    headers: dict[str, str] | None = None,
    agent: str | None = None,
) -> RequestView:
    return RequestView(host, method, path, "", headers or {}, ua, ipaddress.ip_address(ip), agent)


# (path, method, class, ua, expected kind, expected rule)
DEFAULT_TABLE = [
    ("/robots.txt", "GET", "unknown", BROWSER, "allow", "robots-and-friends"),
    ("/.well-known/security.txt", "GET", "unknown", BROWSER, "allow", "well-known"),
    ("/.well-known/popgate/puzzle", "POST", "unknown", BROWSER, "allow", "popgate-endpoints"),
    ("/healthz", "GET", "unknown", BROWSER, "allow", "health"),
    ("/healthz", "POST", "unknown", BROWSER, "challenge", "api-writes"),
    ("/HEALTHZ", "GET", "unknown", BROWSER, "allow", "health"),
    ("/api/v1/things", "GET", "human", BROWSER, "allow", "default"),
    ("/api/v1/things", "GET", "account", BROWSER, "allow", "default"),
    ("/api/v1/things", "GET", "verified-agent", BROWSER, "charge", "default"),
    ("/api/v1/things", "GET", "agent", "curl/8.5", "challenge", "default"),
    ("/api/v1/things", "GET", "unknown", BROWSER, "challenge", "default"),
    ("/api/v1/things", "POST", "human", BROWSER, "allow", "api-writes"),
    ("/api/v1/things", "POST", "agent", BROWSER, "challenge", "api-writes"),
    ("/.env", "GET", "human", BROWSER, "deny", "deny-pathological"),
    ("//.git/config", "GET", "unknown", BROWSER, "deny", "deny-pathological"),
    ("/x/..%2f../.env", "GET", "unknown", BROWSER, "challenge", "default"),  # %2F is data, not a separator
    ("/static/../wp-login.php", "GET", "unknown", BROWSER, "deny", "deny-pathological"),
    ("/%2e%2e/%2e%2e/wp-admin/x", "GET", "unknown", BROWSER, "deny", "deny-pathological"),
    ("/WP-ADMIN/index", "GET", "unknown", BROWSER, "deny", "deny-pathological"),
    ("/api", "GET", "unknown", "HeadlessChrome/120", "challenge", "mild-suspicion"),
    ("/api", "GET", "unknown", "", "challenge", "mild-suspicion"),
    (
        "/api",
        "GET",
        "human",
        "HeadlessChrome/120",
        "allow",
        "mild-suspicion",
    ),  # class not named: default action
]


@pytest.mark.parametrize("path, method, klass, ua, kind, rule", DEFAULT_TABLE)
def test_default_policy(path: str, method: str, klass: str, ua: str, kind: str, rule: str) -> None:
    m = DEFAULT.match(view(path, method, ua=ua), klass)
    assert (m.action.kind, m.rule) == (kind, rule)


def test_unknown_never_silently_allowed_on_api() -> None:
    """Unknown clients get a challenge on API paths, with every way out and a price."""
    a = DEFAULT.match(view("/api/v1/x"), "unknown").action
    assert (
        a.kind == "challenge"
        and {"prove", "puzzle", "pay"} <= set(a.ways)
        and a.price > 0
        and a.min_bits >= 16
    )


def test_weights_add_up_to_higher_threshold() -> None:
    """Headless UA (20) + heuristic weight (10) crosses the high threshold."""
    m = DEFAULT.match(view("/api", ua="HeadlessChrome/120"), "unknown", weight=10)
    assert m.rule == "high-suspicion" and m.action.ways == ("prove", "pay", "credits")
    assert DEFAULT.match(view("/api"), "unknown", weight=9).rule == "default"
    assert DEFAULT.match(view("/api"), "unknown", weight=10).rule == "mild-suspicion"


CUSTOM = loader.loads("""
[default]
all = "deny"
human = "allow"

[[rules]]
name = "office"
networks = ["198.51.100.0/24", "2001:db8:100::/48"]
path = "/admin/**"
action = "allow"

[[rules]]
name = "admin"
path = ["/admin", "/admin/**"]
action = { kind = "deny", status = 403 }

[[rules]]
name = "raw-only"
path_form = "raw"
path = "/raw/*"
case_sensitive = true
action = "allow"

[[rules]]
name = "host-glob"
host = "*.internal.example"
action = { kind = "throttle", rate = "10/s", burst = 5, per = "network" }

[[rules]]
name = "json-clients"
headers = { accept = "application/json", "x-api-version" = "^2" }
action = { kind = "charge", price = "0.002" }

[[rules]]
name = "no-cookies"
headers_absent = ["cookie"]
methods = ["PUT"]
action = "challenge"

[[rules]]
name = "gpt"
user_agent = "(?i)gptbot"
actions.agent = { kind = "charge", price = "0.01" }

[[rules]]
name = "signed-google"
declared_agent = ["*.google.com"]
actions.verified-agent = "allow"

[[rules]]
name = "search"
route = "search-route"
path_regex = "^/search(/.*)?$"
actions.unknown = { kind = "challenge", ways = ["puzzle", "hashcash"], min_bits = 20 }
""")

CUSTOM_TABLE = [
    # (kwargs for view, class, kind, rule)
    ({"path": "/admin/x", "ip": "198.51.100.7"}, "unknown", "allow", "office"),
    ({"path": "/admin/x", "ip": "2001:db8:100:ff::1"}, "unknown", "allow", "office"),
    ({"path": "/admin/x", "ip": "::ffff:198.51.100.7"}, "unknown", "allow", "office"),
    ({"path": "/admin/x", "ip": "198.51.101.7"}, "human", "deny", "admin"),
    ({"path": "//admin", "ip": "203.0.113.1"}, "human", "deny", "admin"),
    ({"path": "/Admin/", "ip": "203.0.113.1"}, "human", "deny", "admin"),
    ({"path": "/%61dmin", "ip": "203.0.113.1"}, "human", "deny", "admin"),
    ({"path": "/raw/x"}, "unknown", "allow", "raw-only"),
    ({"path": "/RAW/x"}, "unknown", "deny", "default"),
    ({"path": "//raw/x"}, "unknown", "deny", "default"),
    ({"path": "/raw/../x"}, "unknown", "deny", "default"),
    ({"path": "/", "host": "db.internal.example:8443"}, "unknown", "throttle", "host-glob"),
    ({"path": "/", "host": "DB.Internal.Example"}, "unknown", "throttle", "host-glob"),
    ({"path": "/", "host": "a.b.internal.example"}, "unknown", "deny", "default"),
    (
        {"path": "/", "headers": {"accept": "application/json", "x-api-version": "2.1"}},
        "unknown",
        "charge",
        "json-clients",
    ),
    ({"path": "/", "headers": {"accept": "application/json"}}, "unknown", "deny", "default"),
    ({"path": "/", "method": "PUT"}, "unknown", "challenge", "no-cookies"),
    ({"path": "/", "method": "PUT", "headers": {"cookie": "a=b"}}, "unknown", "deny", "default"),
    ({"path": "/", "ua": "Mozilla/5.0 (compatible; GPTBot/1.2)"}, "agent", "charge", "gpt"),
    ({"path": "/", "ua": "Mozilla/5.0 (compatible; GPTBot/1.2)"}, "human", "allow", "gpt"),
    ({"path": "/", "agent": "crawler.google.com"}, "verified-agent", "allow", "signed-google"),
    ({"path": "/", "agent": None}, "verified-agent", "deny", "default"),
    ({"path": "/search/q"}, "unknown", "challenge", "search"),
    ({"path": "/searching"}, "unknown", "deny", "default"),
    ({"path": "/.well-known/popgate"}, "unknown", "allow", "popgate-endpoints"),
    ({"path": "/.well-known/popgatex"}, "unknown", "deny", "default"),
    ({"path": "/x/../.well-known/popgate/worldid"}, "unknown", "allow", "popgate-endpoints"),
]


@pytest.mark.parametrize("kw, klass, kind, rule", CUSTOM_TABLE)
def test_custom_policy(kw: dict, klass: str, kind: str, rule: str) -> None:  # type: ignore[type-arg]
    m = CUSTOM.match(view(**kw), klass)
    assert (m.action.kind, m.rule) == (kind, rule)


@pytest.mark.parametrize("policy, table", [(CUSTOM, CUSTOM_TABLE), (DEFAULT, "default")])
def test_a_targets_memoized_plan_gives_what_matching_rule_by_rule_does(policy, table) -> None:  # type: ignore[no-untyped-def]
    """Per target the rules its path and host let through are kept (the plan); the table
    asked twice in either order (every case after others on the same target with other
    headers, user agents, networks, weights) gives what it gives asked alone, and what
    matching rule by rule (the traced path, which keeps no plan) gives."""
    from popgate.policies.model import Trace

    cases = (
        [(kw, k) for kw, k, _kind, _rule in CUSTOM_TABLE]
        if table != "default"
        else [({"path": p, "method": m, "ua": ua}, k) for p, m, k, ua, _kind, _rule in DEFAULT_TABLE]
    )
    policy.memo.clear()
    for order in (cases, cases[::-1]) * 2:
        for kw, klass in order:
            for weight in (0, 10, 30):
                got = policy.match(view(**kw), klass, weight)
                want = policy.match(view(**kw), klass, weight, trace=Trace())
                assert got == want, (kw, klass, weight)
    assert policy.memo and len(policy.memo) <= len(cases)


def test_match_carries_parameters() -> None:
    m = CUSTOM.match(view("/search"), "unknown")
    assert m.route == "search-route" and m.action.ways == ("puzzle", "hashcash") and m.action.min_bits == 20
    t = CUSTOM.match(view("/", host="x.internal.example"), "agent").action
    assert t.rate is not None and (t.rate.count, t.rate.period, t.rate.burst, t.rate.per) == (
        10,
        1.0,
        5,
        "network",
    )
    assert (
        CUSTOM.match(
            view("/", headers={"accept": "application/json", "x-api-version": "2"}), "agent"
        ).action.price
        == 2000
    )


def test_popgate_endpoints_exempt_even_if_file_denies_everything() -> None:
    p = loader.loads('[default]\nall="deny"\n[[rules]]\nname="all"\npath="/**"\naction="deny"\n')
    assert p.match(view("/.well-known/popgate/puzzle"), "unknown").action.kind == "allow"
    assert p.match(view("/.well-known/other"), "unknown").action.kind == "deny"


def test_holder_reload_swaps_and_keeps_old_on_error(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[default]\nall="deny"\n')
    holder = PolicyHolder(loader.load(f), f)
    assert holder.current.match(view(), "human").action.kind == "deny"
    f.write_text('[default]\nall="allow"\n')
    holder.reload()
    assert holder.current.match(view(), "human").action.kind == "allow"
    f.write_text('[default]\nall="maybe"\n')
    old = holder.current
    with pytest.raises(PolicyError):
        holder.reload()
    assert holder.current is old


def test_reload_under_concurrent_readers(tmp_path: Path) -> None:
    """Readers always see a whole policy (one of the two), never an error, while reloads happen."""
    f = tmp_path / "p.toml"
    texts = ['[default]\nall="deny"\n', '[default]\nall="allow"\n']
    f.write_text(texts[0])
    holder = PolicyHolder(loader.load(f), f)
    seen, stop, errors = set(), threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(holder.current.match(view(), "human").action.kind)
            except Exception as e:  # pragma: no cover
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(50):
        f.write_text(texts[i % 2])
        holder.reload()
    stop.set()
    t.join()
    assert not errors and seen <= {"allow", "deny"}
