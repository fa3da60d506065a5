"""`popgate check` and `popgate explain` on the shipped policies, through the real command;
explain's answer is compared with what a running gateway answers for the same request."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from popgate.gateway.cli.explain import DEFAULT_IP, explain, make_request, parse_headers
from popgate.gateway.cli.main import _parser
from popgate.gateway.ops.config import load_config
from popgate.verifiers.session import SessionCodec
from tests.support.servers import ROOT, free_port, wait_port_async

POLICIES = ROOT / "policies"
SNIPPETS = sorted((POLICIES / "snippets").glob("*.toml"))
KEY = "k" * 43


def popgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popgate.gateway", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def demo_like(tmp: Path, policy: Path, upstream: str = "http://127.0.0.1:9", port: int = 0) -> Path:
    """deploy/demo.toml's tables (puzzle, credits) with keys in ``tmp``."""
    for name in ("session", "puzzle", "admin"):
        (tmp / f"{name}.key").write_text(KEY)
    path = tmp / "popgate.toml"
    path.write_text(
        f'[server]\nupstream = "{upstream}"\nlisten = "127.0.0.1:{port or free_port()}"\n'
        f'admin = "127.0.0.1:{free_port()}"\n[store]\nurl = "memory://"\n'
        '[sessions]\nkeys = [{ kid = "k1", secret_file = "session.key" }]\n'
        f'[policy]\nfile = "{policy}"\n[puzzle]\nkeys = [{{ kid = "p1", secret_file = "puzzle.key" }}]\n'
        '[credits]\nadmin_token = { secret_file = "admin.key" }\n'
    )
    return path


def test_version():
    out = popgate("--version")
    assert out.returncode == 0 and out.stdout.startswith("popgate 0.")


def test_check_default_policy_lists_every_route_and_class(tmp_path):
    out = popgate("check", "--config", str(demo_like(tmp_path, POLICIES / "default.toml")))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("popgate.toml: valid")
    assert "ways out configured: puzzle, hashcash, credits" in lines
    assert "ways out not configured: prove ([worldid] or [zklogin] or [privatepass]), pay ([x402])" in lines
    for title in ("rule 'api-writes' (route api-write):", "threshold 'high-suspicion' (route threshold):"):
        assert title in lines
    default = lines[lines.index("[default] (route default):") + 1 :]
    # verified-agent occurs without [webbotauth]: search-engine crawlers ([crawlers] is on by default)
    assert [x.split()[0] for x in default[:3]] == ["verified-agent", "agent", "unknown"]
    assert default[2].endswith("-> ways out: puzzle, hashcash, credits (not configured: prove, pay)")
    assert "threshold 'high-suspicion': from weight 30" in lines
    assert any(x.startswith("weigh rule 'weigh-empty-user-agent': +") for x in lines)
    at = lines.index("rule 'deny-pathological' (route deny-pathological):")
    assert [x.split() for x in lines[at + 1 : at + 3]] == [
        ["verified-agent", "deny", "(404)"],
        ["agent", "deny", "(404)"],
    ]


def test_check_without_payment_rails_names_the_dead_end(tmp_path):
    path = demo_like(tmp_path, POLICIES / "default.toml")
    path.write_text(path.read_text().split("[credits]")[0])
    out = popgate("check", "--config", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "threshold 'high-suspicion': class unknown challenged with no way out" in out.stderr
    assert "[worldid] or [zklogin] or [privatepass] or [x402] or [credits]" in out.stderr


def test_check_every_shipped_snippet(tmp_path):
    """One policy including every snippet in policies/snippets/ (one `popgate check` run)."""
    assert len(SNIPPETS) >= 8
    policy = tmp_path / "policy.toml"
    includes = "".join(f'[[rules]]\ninclude = "{snippet}"\n' for snippet in SNIPPETS)
    policy.write_text(f'[default]\nall = "challenge"\n{includes}')
    out = popgate("check", "--config", str(demo_like(tmp_path, policy)))
    assert out.returncode == 0, out.stderr
    assert f"policy: {policy} (" in out.stdout
    rules = [x for x in out.stdout.splitlines() if x.startswith(("rule '", "weigh rule '"))]
    assert len(rules) >= len(SNIPPETS), rules


EXPLAINED = [
    # (method, path, headers, rule, class, decision prefix, ways out)
    ("GET", "/robots.txt", [], "robots-and-friends", "unknown", "allow", []),
    ("GET", "/.env", ["User-Agent: Mozilla/5.0"], "deny-pathological", "unknown", "deny (404)", []),
    (
        "GET",
        "/api/things",
        ["User-Agent: Mozilla/5.0"],
        "default",
        "unknown",
        "challenge",
        ["puzzle", "hashcash", "credits"],
    ),
    ("GET", "/api/things", [], "mild-suspicion", "unknown", "challenge", ["puzzle", "credits"]),
    (
        "POST",
        "/api/things",
        ["User-Agent: curl/8.5.0"],
        "api-writes",
        "agent",
        "challenge",
        ["credits", "puzzle"],
    ),
]


async def test_explain_matches_the_running_gateway(tmp_path, upstream):
    """For each request: `popgate explain` (JSON and text) and a running gateway agree."""
    port = free_port()
    config = demo_like(tmp_path, POLICIES / "default.toml", upstream, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(config)], cwd=ROOT
    )
    try:
        await wait_port_async(port)
        for case in EXPLAINED:
            await _explain_and_compare(config, port, *case)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _explain_and_compare(config, port, method, path, headers, rule, klass, decision, ways):
    if path == "/api/things" and not headers:  # the command itself, once
        out = popgate("explain", "--config", str(config), method, f"http://api.example.com{path}", "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
    else:  # the same code in-process (each command builds a whole gateway: seconds on a busy machine)
        request = make_request(method, f"http://api.example.com{path}", parse_headers(list(headers)))
        got = await explain(load_config(config), request, DEFAULT_IP)
    assert (got["rule"], got["class"]) == (rule, klass), (path, got)
    assert got["decision"].startswith(decision)
    assert [w["kind"] for w in got["ways_out"]] == ways
    if path == "/api/things" and not headers:  # the text form, once
        text = popgate("explain", "--config", str(config), method, f"http://api.example.com{path}").stdout
        assert f"rule:      {rule} " in text and f"class:     {klass}" in text
        assert f"weight:    {got['weight']} " in text
    sent = dict(h.split(": ", 1) for h in headers)
    sent.setdefault("User-Agent", "")
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent"]) as http:
        url = f"http://127.0.0.1:{port}{path}"
        async with http.request(method, url, headers={"Host": "api.example.com", **sent}) as r:
            body = await r.read()
            status = r.status
    assert status == {"allow": 200, "deny (404)": 404, "challenge": 402}[decision], body
    if status == 402:
        assert [w["kind"] for w in json.loads(body)["ways_out"] if w["kind"] != "pay-per-crawl"] == ways


def test_explain_weight_counts_weigh_rules_and_heuristics(tmp_path):
    config = demo_like(tmp_path, POLICIES / "default.toml")
    got = json.loads(
        popgate("explain", "--config", str(config), "GET", "http://a.example/x", "--json").stdout
    )
    assert got["weight"] == sum(w["weight"] for w in got["weighed_by"]) >= 10
    assert any(w["rule"] != "(heuristics)" for w in got["weighed_by"])


def test_explain_bad_arguments_are_one_line(tmp_path):
    config = demo_like(tmp_path, POLICIES / "default.toml")
    for args, says in (
        (["GET", "ftp://x/"], "expected http://host/path"),
        (["GET", "http://x/", "-H", "nocolon"], "expected 'Name: value'"),
        (["GET", "http://x/", "--ip", "300.1.1.1"], "does not appear to be an IPv4 or IPv6 address"),
    ):
        out = popgate("explain", "--config", str(config), *args)
        assert out.returncode == 2 and out.stderr.startswith("popgate: explain:") and says in out.stderr
        assert "Traceback" not in out.stderr


def test_help_for_every_option_and_every_verify_scheme():
    from popgate.gateway.cli.verify import SCHEMES
    from popgate.gateway.cli.verify_help import SCHEME_HELP

    assert set(SCHEME_HELP) == set(SCHEMES)
    text = popgate("verify", "--help").stdout
    for scheme in SCHEMES:
        assert f"\n  {scheme} " in text, scheme
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"run", "check", "explain", "verify", "keys", "demo-upstream"} <= set(commands.choices)
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"popgate {name} {action.dest}: no help text"
        assert sub.format_help().startswith(f"usage: popgate {name}")


def test_explain_verifies_presented_evidence(tmp_path):
    """A session signed with the config's key is verified by the real Verify stage: class human,
    allowed by the default; a forged one is rejected and the client stays unknown."""
    config = demo_like(tmp_path, POLICIES / "default.toml")
    token = SessionCodec({"k1": KEY.encode()}, "k1").issue(
        klass="human", subject="human:x", now=time.time(), ttl=60
    )
    url = "http://api.example.com/api/things"
    UA = ("-H", "User-Agent: Mozilla/5.0")
    ok = popgate(
        "explain", "--config", str(config), "GET", url, "-H", f"Authorization: PoP {token}", *UA, "--json"
    )
    got = json.loads(ok.stdout)
    assert (got["class"], got["rule"], got["decision"]) == (
        "human",
        "default",
        "allow (forwarded to the origin)",
    )
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = popgate(
        "explain", "--config", str(config), "GET", url, "-H", f"Authorization: PoP {forged}", *UA, "--json"
    )
    got = json.loads(bad.stdout)
    assert got["class"] == "unknown" and got["rejections"] and got["decision"].startswith("challenge")
