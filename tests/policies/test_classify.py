"""Classification: strongest attestation wins; heuristics only without evidence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.policies.classify import RANK, classify, strongest

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0 Safari/537.36"
)
FULL = {
    "accept": "text/html",
    "accept-language": "en",
    "sec-fetch-mode": "navigate",
    "sec-fetch-site": "none",
}


@pytest.mark.parametrize(
    "atts, expected",
    [
        ([], None),
        ([("agent", "a1")], ("agent", "a1")),
        ([("agent", "a1"), ("human", "h1"), ("account", "c1")], ("human", "h1")),
        ([("verified-agent", "v"), ("account", "c")], ("account", "c")),
        ([("unknown", "u"), ("agent", "a")], ("agent", "a")),
        ([("human", "first"), ("human", "second")], ("human", "first")),
    ],
)
def test_strongest(atts: list[tuple[str, str]], expected: tuple[str, str] | None) -> None:
    assert strongest(atts) == expected


def test_unknown_class_in_attestation_is_a_bug() -> None:
    with pytest.raises(ValueError):
        strongest([("robot", "x")])


@given(st.lists(st.tuples(st.sampled_from(sorted(RANK)), st.text(max_size=5)), max_size=6))
def test_strongest_is_max_rank(atts: list[tuple[str, str]]) -> None:
    got = strongest(atts)
    if not atts:
        assert got is None
    else:
        assert got is not None and RANK[got[0]] == max(RANK[k] for k, _ in atts)


@pytest.mark.parametrize(
    "ua, headers, klass, weight",
    [
        ("curl/8.5.0", {}, "agent", 0),
        ("python-requests/2.32", {}, "agent", 0),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            {},
            "agent",
            0,
        ),
        ("Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", {}, "agent", 0),
        ("Mozilla/5.0 (compatible; Googlebot/2.1)", FULL, "agent", 0),
        ("my-custom-crawler/1.0", {}, "agent", 0),
        (CHROME, FULL, "unknown", 0),
        (CHROME, {"accept": "*/*"}, "unknown", 15),
        (CHROME, {}, "unknown", 20),
        ("", {}, "unknown", 10),
        ("SomeApp/1.0", {}, "unknown", 0),
    ],
)
def test_heuristics(ua: str, headers: dict[str, str], klass: str, weight: int) -> None:
    c = classify([], ua, headers)
    assert (c.klass, c.weight) == (klass, weight)


def test_evidence_beats_heuristics() -> None:
    """A verified human with a curl UA stays human, with no heuristic weight."""
    c = classify([("human", "nym1")], "curl/8", {})
    assert (c.klass, c.subject, c.weight) == ("human", "nym1", 0)
