"""The `backed-agent` class in policies: named in defaults, rules and thresholds; policies
written before it existed give it the verified-agent action they name."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from popgate.policies import loader
from popgate.policies.model import RequestView

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"


def view(path: str = "/api/x", method: str = "GET", ua: str = UA) -> RequestView:
    return RequestView("api.example.com", method, path, "", {}, ua, ipaddress.ip_address("203.0.113.9"))


def test_backed_agent_in_default_rules_and_thresholds() -> None:
    """Each place a class can be named takes backed-agent, apart from verified-agent."""
    p = loader.loads("""
[default]
all = "deny"
backed-agent = { kind = "throttle", rate = "100/day", per = "subject" }
verified-agent = { kind = "charge", price = "0.001" }
[[rules]]
name = "reports"
path = "/reports/**"
[rules.actions]
backed-agent = { kind = "charge", price = "0.01" }
[[rules]]
name = "headless"
user_agent = "HeadlessChrome"
weight = 20
[[thresholds]]
name = "suspicious"
weight = 10
actions.backed-agent = { kind = "challenge", ways = ["pay"], price = "0.002" }
""")
    m = p.match(view(), "backed-agent")
    assert m.action.kind == "throttle" and m.action.rate is not None and m.action.rate.per == "subject"
    assert p.match(view(), "verified-agent").action.kind == "charge"
    m = p.match(view("/reports/q1"), "backed-agent")
    assert (m.rule, m.action.kind, m.action.price) == ("reports", "charge", 10_000)
    m = p.match(view(ua="HeadlessChrome/130"), "backed-agent", 0)
    assert (m.rule, m.action.kind) == ("suspicious", "challenge")


def test_policies_without_backed_agent_treat_it_as_verified_agent() -> None:
    """A file naming verified-agent but not backed-agent (written before delegations) still
    compiles, and backed agents get the verified-agent action in [default] and in rules."""
    p = loader.loads("""
[default]
all = "challenge"
verified-agent = "allow"
[[rules]]
name = "search"
path = "/search"
actions.verified-agent = { kind = "charge", price = "0.002" }
""")
    assert p.match(view(), "backed-agent").action.kind == "allow"
    assert p.match(view("/search"), "backed-agent").action.price == 2000
    assert p.match(view(), "agent").action.kind == "challenge"


def test_shipped_default_backs_agents_like_the_issue_asks() -> None:
    """policies/default.toml: backed agents read free (their person's daily quota bounds them)
    and pay for writes what verified agents pay."""
    p = loader.load(Path(loader.__file__).parent / "default.toml")
    assert p.match(view(), "backed-agent").action.kind == "allow"
    writes = p.match(view(method="POST"), "backed-agent").action
    assert writes == p.match(view(method="POST"), "verified-agent").action
