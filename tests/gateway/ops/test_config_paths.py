"""Relative paths against the config file's directory, `:PORT`, and the `-H` parser of
`popgate explain`: examples and property tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.cli.explain import parse_headers
from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.ops.config_paths import resolve_paths

BASE = Path("/etc/popgate")
segment = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/\\"), min_size=1
)


def test_every_path_key_and_a_relative_sqlite_url_resolve(tmp_path):
    data = {
        "store": {"url": "sqlite:///var/store.db"},
        "sessions": {"keys": [{"kid": "a", "secret_file": "keys/s"}, {"kid": "b", "secret_env": "X"}]},
        "policy": {"file": "../policies/p.toml"},
        "worldid": {"vk_file": "/abs/vk.json", "roots": {"file": ""}},
        "zklogin": {"proof_vk_file": "vk.json", "providers": [{"jwks_file": "./jwks.json"}]},
        "server": {"upstream": "http://x", "listen": "a:1"},
    }
    resolve_paths(data, BASE)
    assert data["store"]["url"] == "sqlite:////etc/popgate/var/store.db"
    assert data["sessions"]["keys"][0]["secret_file"] == "/etc/popgate/keys/s"
    assert data["sessions"]["keys"][1] == {"kid": "b", "secret_env": "X"}
    assert data["policy"]["file"] == "/etc/policies/p.toml"
    assert data["worldid"] == {"vk_file": "/abs/vk.json", "roots": {"file": ""}}  # absolute, and "off"
    assert data["zklogin"]["proof_vk_file"] == "/etc/popgate/vk.json"
    assert data["zklogin"]["providers"][0]["jwks_file"] == "/etc/popgate/jwks.json"
    assert data["server"] == {"upstream": "http://x", "listen": "a:1"}


@given(st.lists(segment, min_size=1, max_size=4))
def test_relative_paths_land_under_the_base_absolute_ones_stay(parts):
    rel = "/".join(p for p in parts if p not in (".", ".."))
    if not rel:
        return
    data = {"sessions": {"keys": [{"secret_file": rel}, {"secret_file": "/" + rel}]}}
    resolve_paths(data, BASE)
    first, second = (k["secret_file"] for k in data["sessions"]["keys"])
    assert first == os.path.normpath(BASE / rel) and first.startswith("/etc/popgate/")
    assert second == "/" + rel


@given(st.integers(min_value=0, max_value=65535))
def test_colon_port_means_every_interface(tmp_path_factory, port):
    d = tmp_path_factory.mktemp("c")
    (d / "k").write_text("k" * 40)
    (d / "c.toml").write_text(
        f'[server]\nupstream = "http://127.0.0.1:1"\nlisten = ":{port}"\n'
        '[sessions]\nkeys = [{ kid = "k", secret_file = "k" }]\n'
    )
    cfg = load_config(d / "c.toml")
    assert (cfg.listen.host, cfg.listen.port, cfg.listen.bind_host) == ("", port, None)


@pytest.mark.parametrize("bad", [":", ":x", "::80", "[::1]", "host", ":99999"])
def test_bad_listen_values_are_config_problems(tmp_path, bad):
    (tmp_path / "k").write_text("k" * 40)
    (tmp_path / "c.toml").write_text(
        f'[server]\nupstream = "http://127.0.0.1:1"\nlisten = "{bad}"\n'
        '[sessions]\nkeys = [{ kid = "k", secret_file = "k" }]\n'
    )
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "c.toml")
    assert any(p.startswith("server.listen:") for p in e.value.problems)


@given(st.lists(st.text(max_size=40), max_size=6))
def test_header_arguments_parse_or_fail_with_a_clear_error(items):
    try:
        headers = parse_headers(items)
    except ValueError as exc:
        assert str(exc).startswith("-H ") and "expected 'Name: value'" in str(exc)
        return
    assert len(headers) == len(items)
    for item, (name, value) in zip(items, headers.items()):
        assert item.partition(":")[0].strip() == name and item.partition(":")[2].strip() == value
