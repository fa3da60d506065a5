"""Configuration: complete example loads; every problem reported at once with its path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popgate.gateway.ops.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "popgate.example.toml"


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(text)
    return p


#: Every secret the example names (secret_env), with a value of the right size.
EXAMPLE_ENV = {
    "POPGATE_SESSION_KEY_2026_11": "s" * 43,
    "POPGATE_SESSION_KEY_2026_10": "t" * 43,
    "POPGATE_SUBJECT_KEY": "u" * 43,
    "POPGATE_PUZZLE_KEY_2026_11": "p" * 43,
    "POPGATE_ZKLOGIN_SALT": "z" * 43,
    "POPGATE_ADMIN_TOKEN": "a" * 43,
    "POPGATE_GOOGLE_CLIENT_SECRET": "g" * 43,
}


async def test_readme_example_config_is_valid(monkeypatch):
    """The documented complete example loads (its secrets come from the environment)
    and builds a gateway with every extension on: each validates its own table, offline."""
    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.stores.memory import MemoryStore

    text = EXAMPLE.read_text()
    named = set(re.findall(r'secret_env = "([A-Z0-9_]+)"', text))
    assert named == set(EXAMPLE_ENV), "the example names secrets this test does not set"
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # relative paths in the example: from its own directory, wherever we are
    cfg = load_config(EXAMPLE)
    assert cfg.sessions.signing_kid == "2026-11"
    assert set(cfg.sessions.keys) == {"2026-11", "2026-10"}
    assert cfg.upstream.port == 8000
    assert cfg.policy.file == str(EXAMPLE.parents[1] / "policies" / "default.toml")
    assert cfg.puzzle is not None and cfg.puzzle.bits == 16
    for table in (
        "difficulty",
        "overload",
        "worldid",
        "worldid_api",
        "zklogin",
        "webbotauth",
        "x402",
        "credits",
        "privatepass",
        "delegation",
    ):
        assert table in cfg.raw, f"[{table}] missing from the example"

    gw = build_app(cfg, store=MemoryStore(), extensions=default_extensions())
    try:
        for path in (
            "session",
            "puzzle",
            "worldid",
            "zklogin",
            "credits/topup",
            "oidc/google/start",
            "oidc/google/callback",
            "api/v2/verify/app_staging_0123456789abcdef0123456789abcdef",
            "static/popgate-client.js",
            "delegate",
        ):
            assert f"/.well-known/popgate/{path}" in gw.endpoints, path
        schemes = {s.name for s in gw.schemes}
        assert {"session", "puzzle", "hashcash", "webbotauth"} <= schemes, schemes
        assert gw.session_scheme.binders.keys() >= {"net", "httpsig"}
        admin = {path for _, path, _ in gw.admin_routes}
        assert "/admin/credits/keys" in admin and "/admin/settlements" in admin
        assert "/admin/worldid/verifications" in admin
        assert gw.policy.policy.holder is not None  # the policy file is in use
    finally:
        await gw.close()  # stops the World ID process pool and the settlement worker


def test_feature_tables_reported_in_one_pass(tmp_path):
    """Mistakes in three feature tables → one ConfigError from load_config naming all three key paths."""
    path = write(
        tmp_path,
        """
[server]
upstream = "http://127.0.0.1:9"
[sessions]
keys = [{ kid = "k1", secret_env = "POPGATE_TEST_KEY" }]
[difficulty]
ceiling = -1
[webbotauth]
signature_window = "soon"
allow_any_agent = true
[x402]
pay_to = "nope"
facilitator = "https://facilitator.example"
""",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"POPGATE_TEST_KEY": "k" * 32})
    text = "\n".join(exc.value.problems)
    for where in ("difficulty.ceiling", "webbotauth.signature_window", "x402.pay_to"):
        assert where in text, (where, text)


def test_all_problems_reported_together(tmp_path):
    """Several mistakes → one ConfigError naming each key path."""
    (tmp_path / "short").write_bytes(b"tooshort")
    path = write(
        tmp_path,
        f"""
[server]
listen = "nope"
upstream = "ftp://x"
trusted_proxies = ["10.0.0.0/8", "banana"]
bogus = 1
[limits]
max_body_bytes = -5
[store]
url = "mysql://x"
[store.failure_mode]
spend = "maybe"
ratelimit = "open"
[sessions]
signing_kid = "zz"
keys = [{{kid = "k1", secret_file = "{tmp_path / "short"}"}}, \
{{kid = "k2", secret_env = "POPGATE_NOT_SET_X"}}, {{kid = "bad kid!", secret_file = "/x"}}]
[policy]
unknown = "shrug"
""",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    text = "\n".join(exc.value.problems)
    for where in (
        "server.listen",
        "server.upstream",
        "server.trusted_proxies[1]",
        "server.bogus",
        "limits.max_body_bytes",
        "store.url",
        "store.failure_mode.spend",
        "store.failure_mode.ratelimit",
        "sessions.keys[0]",
        "sessions.keys[1].secret_env",
        "sessions.keys[2].kid",
        "policy.unknown",
    ):
        assert where in text, f"{where} missing from:\n{text}"
    assert len(exc.value.problems) >= 11


def test_inline_secret_refused(tmp_path):
    """Secrets are never accepted inline in the file."""
    path = write(
        tmp_path, '[server]\nupstream = "http://a:1"\n[sessions]\nkeys = [{kid = "k1", secret = "x"}]\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert any("sessions.keys[0].secret" in p for p in exc.value.problems)


def test_nul_in_a_file_name_is_a_config_problem_not_a_crash(tmp_path):
    """TOML can spell a NUL (\\u0000); a file name holding one is reported with its
    key path (it crashed start-up with a ValueError traceback)."""
    path = write(
        tmp_path,
        '[server]\nupstream = "http://a:1"\n[sessions]\n'
        'keys = [{kid = "k1", secret_file = "/etc/k\\u0000"}]\n'
        '[policy]\nfile = "p\\u0000.toml"\n',
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [
        "sessions.keys[0].secret_file: NUL character in a string",
        "policy.file: NUL character in a string",
    ]


def test_missing_keys_is_an_error_not_a_silent_default(tmp_path):
    """No session key configured → start-up fails; popgate never invents one."""
    path = write(tmp_path, '[server]\nupstream = "http://a:1"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert any("sessions.keys" in p and "popgate keys generate" in p for p in exc.value.problems)


def test_cli_overrides_win(tmp_path):
    """--upstream, --listen, --admin and --store override the file."""
    (tmp_path / "k").write_bytes(b"k" * 32)
    path = write(
        tmp_path,
        '[server]\nupstream = "http://a:1"\n'
        f'[sessions]\nkeys = [{{kid = "k1", secret_file = "{tmp_path / "k"}"}}]\n',
    )
    cfg = load_config(
        path,
        {
            "server.upstream": "http://127.0.0.1:9999",
            "server.listen": "[::1]:8081",
            "server.admin": "127.0.0.1:9191",
            "store.url": "redis://127.0.0.1:6390/2",
        },
    )
    assert (cfg.upstream.host, cfg.upstream.port) == ("127.0.0.1", 9999)
    assert (cfg.listen.host, cfg.listen.port) == ("::1", 8081)
    assert cfg.admin.port == 9191 and cfg.store.url.startswith("redis://")


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\n"))


def test_failure_modes_default_closed(tmp_path):
    (tmp_path / "k").write_bytes(b"k" * 32)
    path = write(
        tmp_path,
        f'[server]\nupstream = "http://a:1"\n[store.failure_mode]\nrate_limit = "open"\n'
        f'[sessions]\nkeys = [{{kid = "k1", secret_file = "{tmp_path / "k"}"}}]\n',
    )
    cfg = load_config(path)
    assert cfg.store.mode("rate_limit") == "open"
    assert cfg.store.mode("spend") == "closed"
