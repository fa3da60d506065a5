"""Render the browser challenge page (``gateway/static/challenge.html``).

The template has ``{{name}}`` placeholders; :func:`render` fills each with the
HTML-escaped value (quotes included, so values are safe in attributes) and
refuses unknown or missing names. :func:`challenge_page` is what the gateway
calls: it builds the variables from a puzzle challenge and the other ways out,
and makes the return path safe (a local path only, never ``//host``).
The gateway serves the result with status 402, never 200.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent.parent / "static"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_SAFE_PATH = re.compile(r"/(?![/\\])[^\x00-\x20\\#]*\Z")


class TemplateError(Exception):
    """A placeholder without a value, or a value without a placeholder."""


def render(template: str, values: dict[str, object]) -> str:
    """Replace every ``{{name}}`` with ``html.escape(str(values[name]))``."""
    used: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise TemplateError(f"no value for {{{{{name}}}}}")
        used.add(name)
        return html.escape(str(values[name]), quote=True)

    out = _PLACEHOLDER.sub(sub, template)
    extra = set(values) - used
    if extra:
        raise TemplateError(f"values without placeholder: {sorted(extra)}")
    return out


def safe_return_path(path: str) -> str:
    """``path`` when it is a local absolute path (``/x?y``), else ``/``."""
    return path if _SAFE_PATH.match(path) and len(path) <= 2048 else "/"


@dataclass(frozen=True, slots=True)
class WayOut:
    """Another way in, shown as a link (World ID, sign-in, API key docs...)."""

    label: str
    url: str


def _links(ways: tuple[WayOut, ...]) -> str:
    items = []
    for w in ways:
        url = w.url if w.url.startswith(("/", "https://")) else "#"
        items.append(f'<li><a href="{html.escape(url, quote=True)}">{html.escape(w.label)}</a></li>')
    return "\n".join(items)


OTHER_WAYS_MARKER = "<!--other_ways-->"
_TEMPLATE_CACHE: dict[Path, str] = {}


def challenge_page(
    *,
    challenge: str,
    bits: int,
    subs: int,
    expires: int,
    return_to: str,
    other_ways: tuple[WayOut, ...] = (),
    reason: str = "",
    submit_url: str = "/.well-known/popgate/puzzle",
    template: Path | None = None,
) -> str:
    """The page's HTML. ``other_ways`` become links where the template says
    ``<!--other_ways-->`` (built here, every part escaped)."""
    path = template or STATIC / "challenge.html"
    text = _TEMPLATE_CACHE.get(path)
    if text is None:
        text = _TEMPLATE_CACHE[path] = path.read_text(encoding="utf-8")
    links = _links(other_ways) or "<li>No other way in is offered for this page.</li>"
    page = render(
        text,
        {
            "challenge": challenge,
            "bits": bits,
            "subs": subs,
            "expires": expires,
            "return_to": safe_return_path(return_to),
            "submit_url": submit_url,
            "reason": reason or "This site checks that visitors are not automated scrapers.",
            "expected_hashes": f"{subs * (1 << bits):,}",
        },
    )
    # Escaped values can never contain "<", so no value can forge this marker.
    return page.replace(OTHER_WAYS_MARKER, links)


_WAY_LABELS = {
    "prove": "Prove you are a person (World ID or sign-in)",
    "pay": "Pay for this request (x402, USDC)",
    "credits": "Use an API key with prepaid credits",
    "hashcash": "Send a hashcash stamp (X-Hashcash header)",
}


def html_challenge(request: Any, challenge: Any) -> str:
    """The gateway's ``html_challenge`` hook: the page for a 402 Challenge.

    With a ``puzzle`` way out the page solves it in a Web Worker; without
    one it lists the other ways in. Served with status 402 by the caller.
    """
    puzzle_way = None
    others: list[WayOut] = []
    for w in challenge.ways_out:
        if w.kind == "puzzle" and puzzle_way is None:
            puzzle_way = w.params
            continue
        p = w.params
        url = next(
            (
                str(p[k])
                for k in ("page", "url", "submit", "endpoint")
                if isinstance(p.get(k), str) and str(p[k]).startswith(("/", "https://"))
            ),
            "",
        )
        label = str(p.get("label") or _WAY_LABELS.get(w.kind, w.kind))
        others.append(WayOut(label, url or "#"))
    if puzzle_way is None:
        items = _links(tuple(others)) or "<li>No way in is offered for this page.</li>"
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            "<title>402 Evidence required</title></head><body><main>"
            f"<h1>Evidence required</h1><p>{html.escape(challenge.detail)}</p>"
            f"<h2>Ways in</h2><ul>{items}</ul></main></body></html>"
        )
    return challenge_page(
        challenge=str(puzzle_way["challenge"]),
        bits=int(puzzle_way["bits"]),
        subs=int(puzzle_way.get("subs", 1)),
        expires=int(puzzle_way["expires"]),
        return_to=request.path_qs,
        other_ways=tuple(others),
        submit_url=str(puzzle_way.get("submit", "/.well-known/popgate/puzzle")),
    )
