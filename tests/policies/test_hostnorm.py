"""Host normalization (policies/hostnorm.py): one spelling per host, ValueError for the rest."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.policies.hostnorm import normalize_host, normalize_host_glob
from popgate.policies.loader import loads
from popgate.policies.model import RequestView
from popgate.verifiers.net import parse_ip

LABEL = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.integers(0, 65535)


@given(NAME, PORT, st.booleans(), st.booleans())
def test_spellings_of_one_host_are_one_host(name, port, upper, dot):
    spelled = (name.upper() if upper else name) + ("." if dot else "")
    assert normalize_host(spelled) == (name, None)
    assert normalize_host(f"{spelled}:{port}") == (name, port)


@given(st.text(max_size=40))
def test_anything_is_a_host_or_a_value_error(text):
    try:
        host, port = normalize_host(text)
    except ValueError:
        return
    assert normalize_host(host) == (host, None), "normalizing twice changes nothing"
    assert host == host.lower() and host.isascii() and not host.endswith(".")
    assert port is None or 0 <= port <= 65535


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Secret.Example.", ("secret.example", None)),
        ("bücher.example", ("xn--bcher-kva.example", None)),
        ("BÜCHER.EXAMPLE.:8443", ("xn--bcher-kva.example", 8443)),
        ("[2001:DB8:0:0::1]:80", ("[2001:db8::1]", 80)),
        ("127.0.0.1:", ("127.0.0.1", None)),
    ],
)
def test_examples(raw, want):
    assert normalize_host(raw) == want


@pytest.mark.parametrize(
    "raw", ["", "a..b", "a b", "[::1", "[fe80::1%25eth0]", "::1", "h:70000", "h:x", "%61.b"]
)
def test_invalid_hosts(raw):
    with pytest.raises(ValueError):
        normalize_host(raw)


def test_rule_globs_take_the_same_form():
    """A rule written with a Unicode name or a trailing dot matches the normalized request host."""
    assert normalize_host_glob("*.Bücher.Example.") == "*.xn--bcher-kva.example"
    policy = loads(
        '[default]\nall = "allow"\n[[rules]]\nname = "s"\nhost = ["Bücher.example."]\naction = "deny"\n'
    )
    view = RequestView("xn--bcher-kva.example", "GET", "/", "", {}, "", parse_ip("127.0.0.1"))
    assert policy.match(view, "unknown", 0).action.kind == "deny"
