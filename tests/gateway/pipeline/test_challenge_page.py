"""The browser challenge page: escaping, safe return paths, worker contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.pipeline import challenge_page as cp

STATIC = Path(cp.__file__).parent.parent / "static"


def page(**kw: object) -> str:
    args: dict[str, object] = {
        "challenge": "pz1.k1.abc.def",
        "bits": 16,
        "subs": 1,
        "expires": 1790000300,
        "return_to": "/docs?page=2",
    }
    args.update(kw)
    return cp.challenge_page(**args)  # type: ignore[arg-type]


def test_page_carries_challenge_and_is_accessible() -> None:
    """Variables land in data attributes; progress is announced via aria-live; noscript explains."""
    html = page(other_ways=(cp.WayOut("Verify with World ID", "/.well-known/popgate/worldid"),))
    assert 'data-challenge="pz1.k1.abc.def"' in html and 'data-bits="16"' in html
    assert 'data-return="/docs?page=2"' in html
    assert 'aria-live="polite"' in html and "<noscript>" in html and '<html lang="en">' in html
    assert '<a href="/.well-known/popgate/worldid">Verify with World ID</a>' in html
    assert "{{" not in html and "challenge-worker.js" in html
    assert "65,536" in html  # expected attempts explained


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/ok/path?x=1", "/ok/path?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        ("/a b", "/"),
    ],
)
def test_return_path_is_local(path: str, expected: str) -> None:
    assert cp.safe_return_path(path) == expected


def test_other_ways_only_https_or_local() -> None:
    html = page(other_ways=(cp.WayOut("<b>x</b>", "javascript:alert(1)"),))
    assert 'href="#"' in html and "&lt;b&gt;x&lt;/b&gt;" in html and "javascript:" not in html


@given(st.text(max_size=200))
def test_values_are_escaped(value: str) -> None:
    """No value can break out of its attribute or inject markup (nor forge the links marker)."""
    html = page(challenge=value, reason=value, return_to="/" + value)
    for m in re.finditer(r'data-[a-z]+="([^"]*)"', html):
        assert "<" not in m.group(1) and ">" not in m.group(1)
    assert html.count("<script>") == 1 and html.count("</main>") == 1


def test_render_rejects_missing_and_extra_values() -> None:
    with pytest.raises(cp.TemplateError):
        cp.render("{{a}} {{b}}", {"a": 1})
    with pytest.raises(cp.TemplateError):
        cp.render("{{a}}", {"a": 1, "c": 2})
    assert (
        cp.render("<p title='{{a}}'>{{a}}</p>", {"a": "'\"<&"})
        == "<p title='&#x27;&quot;&lt;&amp;'>&#x27;&quot;&lt;&amp;</p>"
    )


def test_worker_speaks_the_puzzle_format() -> None:
    """The worker hashes challenge+n (k=1) or challenge.j.n (k>1) with SHA-256, as verifiers/puzzle.py."""
    js = (STATIC / "challenge-worker.js").read_text()
    assert 'subtle.digest("SHA-256"' in js
    assert 'subs === 1 ? challenge : challenge + "." + j + "."' in js
    html = (STATIC / "challenge.html").read_text()
    assert '"/.well-known/popgate/puzzle"' not in html  # the submit URL comes from the template variable
    assert 'd.challenge + ":" + nonces.join(",")' in html
