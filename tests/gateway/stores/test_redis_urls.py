"""The ``redis+sentinel://`` URL: parsing (examples and properties) and its
validation in the config, every problem under its key path."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.validation import ConfigError
from popgate.gateway.stores import open_store
from popgate.gateway.stores.redis import RedisStore
from popgate.gateway.stores.redis_urls import SentinelURL, parse_cluster_url, parse_sentinel_url
from tests.support.servers import write_config


def test_sentinel_url_examples():
    u = parse_sentinel_url("rediss+sentinel://u:p%40ss@s1.example:26379,10.0.0.2:5000,[::1]/mymaster/3")
    assert u == SentinelURL(
        [("s1.example", 26379), ("10.0.0.2", 5000), ("::1", 26379)],
        "mymaster",
        3,
        {"ssl": True, "username": "u", "password": "p@ss"},
    )
    assert parse_sentinel_url("redis+sentinel://h/m").db == 0
    for bad in (
        "redis+sentinel://h:1",  # no master name
        "redis+sentinel://h:1/",
        "redis+sentinel://h:1/m/x",
        "redis+sentinel://h:1/m/12345",
        "redis+sentinel://h:1/bad name",
        "redis+sentinel://h:99999/m",
        "redis+sentinel://h:1,/m",
        "redis+sentinel://h:1/m?x=1",
        "redis://h:1/0",
    ):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


_host = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
_port = st.integers(1, 65535)
_name = st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True)


@given(st.lists(st.tuples(_host, _port), min_size=1, max_size=5), _name, st.integers(0, 9999))
def test_sentinel_url_round_trips(nodes, name, db):
    url = "redis+sentinel://" + ",".join(f"{h}:{p}" for h, p in nodes) + f"/{name}/{db}"
    u = parse_sentinel_url(url)
    assert (u.sentinels, u.master, u.db, u.options) == (nodes, name, db, {"ssl": False})


@given(st.text(max_size=80))
def test_store_url_parsers_only_ever_raise_value_error(tail):
    for parse in (parse_sentinel_url, parse_cluster_url):
        for prefix in ("redis+sentinel://", "redis+cluster://", ""):
            try:
                parse(prefix + tail)
            except ValueError:
                pass


def test_config_validates_sentinel_urls_and_replica_acks(tmp_path):
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/popgate/0"
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1", store=url))
    assert cfg.store.url == url and cfg.store.replica_acks is None
    store = open_store(url)
    assert isinstance(store, RedisStore) and store.replica_acks == 1  # Sentinel: WAIT 1 by default
    assert open_store("redis://127.0.0.1:1/0").replica_acks == 0  # type: ignore[attr-defined]
    cases = {
        "redis+sentinel://127.0.0.1:26379/": "store.url: expected the monitored master's name",
        "redis+sentinel://127.0.0.1:26379/popgate/x": "store.url: bad database",
        "redis+sentinel://127.0.0.1:99999/popgate": "store.url: bad port",
    }
    for bad, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(write_config(tmp_path, "http://127.0.0.1:1", store=bad))
    acks = {
        "2": None,
        "0": None,
        '"1"': "store.replica_acks: expected an integer",
        "17": "store.replica_acks: must be <= 16",
    }
    for value, message in acks.items():
        path = write_config(tmp_path, "http://127.0.0.1:1", store=url)
        path.write_text(path.read_text().replace("[store]\n", f"[store]\nreplica_acks = {value}\n"))
        if message is None:
            assert load_config(path).store.replica_acks == int(value)
        else:
            with pytest.raises(ConfigError, match=message):
                load_config(path)
    for store_url in ("memory://", "redis+cluster://127.0.0.1:7000/"):
        path = write_config(tmp_path, "http://127.0.0.1:1", store=store_url)
        path.write_text(path.read_text().replace("[store]\n", "[store]\nreplica_acks = 1\n"))
        with pytest.raises(ConfigError, match=re.escape("store.replica_acks: needs store.url = redis://")):
            load_config(path)
