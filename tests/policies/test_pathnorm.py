"""Path normalization: tricks that must not bypass a rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.policies.pathnorm import normalize_path


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("/admin", "/admin"),
        ("//admin", "/admin"),
        ("///admin//x", "/admin/x"),
        ("/%2e%2e/admin", "/admin"),
        ("/%2E%2E/%2e/admin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/x/./admin", "/x/admin"),
        ("/%61dmin", "/admin"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/a/%2fb", "/a/%2Fb"),
        ("/a/%zz", "/a/%25zz"),
        ("admin", "/admin"),
        ("", "/"),
        ("/a/.hidden", "/a/.hidden"),
        ("/a/..b", "/a/..b"),
        ("/%7euser", "/~user"),
        ("/a%20b", "/a%20b"),
        ("/x/.%2e/admin", "/admin"),
        ("/./", "/"),
    ],
)
def test_table(raw: str, norm: str) -> None:
    assert normalize_path(raw) == norm


PIECES = [*"/.a%2eE5fF~-_", "%2e", "%2E", "%2f", "%41", "..", "//"]
PATH = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@given(PATH)
def test_idempotent(raw: str) -> None:
    """Normalizing twice changes nothing."""
    once = normalize_path(raw)
    assert normalize_path(once) == once


@given(PATH)
def test_canonical_shape(raw: str) -> None:
    """Starts with '/', no empty, '.' or '..' segments, no escaped unreserved characters."""
    n = normalize_path(raw)
    assert n.startswith("/") and "//" not in n
    assert all(seg not in (".", "..") for seg in n.split("/"))
    assert "%2e" not in n.lower() and "%41" not in n.upper()


def test_stray_percent_cannot_assemble_an_escape() -> None:
    """Found by hypothesis: '%a%41' once decoded to '%aA', which a second decoder reads as %AA."""
    assert normalize_path("/%a%41") == "/%25aA"
    assert normalize_path(normalize_path("/%a%41")) == "/%25aA"
    assert normalize_path("/100%") == "/100%25"
