"""``[page]``: the operator's branding of the challenge page, validated once.

[page]
title = "Example Corp"                 # shown above the page heading and in <title>
logo_url = "https://example.com/logo.svg"  # https:// or a local /path; "" = none
logo_alt = "Example Corp"              # the logo's text alternative (default: title)
contact = "help@example.com"           # a contact line at the foot of the page
worldid_bridge = "https://bridge.worldcoin.org"  # the World ID bridge the widget talks to

[page.colors]                          # #rgb or #rrggbb; text/background and accent/background
accent = "#1a56b8"                     # must keep WCAG AA contrast (4.5:1), checked here
background = "#ffffff"
text = "#1b1b1f"
accent_dark = "#8ab4f8"                # the same three for prefers-color-scheme: dark
background_dark = "#121316"
text_dark = "#e8e8ec"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from popgate.gateway.ops.validation import Collector

KEYS = {"title", "logo_url", "logo_alt", "contact", "colors", "worldid_bridge"}
COLORS = {
    "accent": "#1a56b8",
    "background": "#ffffff",
    "text": "#1b1b1f",
    "accent_dark": "#8ab4f8",
    "background_dark": "#121316",
    "text_dark": "#e8e8ec",
}
PAIRS = (("text", "background"), ("accent", "background"))
MIN_CONTRAST = 4.5
DEFAULT_BRIDGE = "https://bridge.worldcoin.org"
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})\Z")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*\Z")


@dataclass(frozen=True, slots=True)
class PageSettings:
    title: str = ""
    logo_url: str = ""
    logo_alt: str = ""
    contact: str = ""
    worldid_bridge: str = DEFAULT_BRIDGE
    colors: dict[str, str] = field(default_factory=lambda: dict(COLORS))


def luminance(color: str) -> float:
    """WCAG 2 relative luminance of ``#rgb`` / ``#rrggbb``."""
    h = color[1:]
    if len(h) == 3:
        h = "".join(ch * 2 for ch in h)
    out = 0.0
    for weight, i in ((0.2126, 0), (0.7152, 2), (0.0722, 4)):
        c = int(h[i : i + 2], 16) / 255
        out += weight * (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    return out


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _text(c: Collector, t: dict[str, Any], name: str, limit: int) -> str:
    v = t.get(name, "")
    if not isinstance(v, str) or len(v) > limit or not _PRINTABLE.match(v):
        c.problem(f"page.{name}", f"expected a one-line string of at most {limit} characters")
        return ""
    return v


def _url(c: Collector, t: dict[str, Any], name: str, https_origin_only: bool = False) -> str:
    v = _text(c, t, name, 2048)
    if not v:
        return v
    parts = urlsplit(v)
    local = v.startswith("/") and not v.startswith("//") and not https_origin_only
    if not local and not (parts.scheme == "https" and parts.hostname):
        c.problem(f"page.{name}", "expected an https:// URL" + ("" if https_origin_only else " or a /path"))
        return ""
    if https_origin_only and parts.path not in ("", "/"):
        c.problem(f"page.{name}", "expected an origin (https://host), no path")
        return ""
    return v.rstrip("/") if https_origin_only else v


def _colors(c: Collector, t: dict[str, Any]) -> dict[str, str]:
    given = c.table("colors", t)
    c.unknown_keys("page.colors", given, set(COLORS))
    out = dict(COLORS)
    for k, v in given.items():
        if k in COLORS and isinstance(v, str) and _HEX.match(v):
            out[k] = v
        elif k in COLORS:
            c.problem(f"page.colors.{k}", f"expected #rgb or #rrggbb, got {v!r}")
    for suffix in ("", "_dark"):
        for fg, bg in PAIRS:
            ratio = contrast(out[fg + suffix], out[bg + suffix])
            if ratio < MIN_CONTRAST:
                c.problem(
                    f"page.colors.{fg}{suffix}",
                    f"contrast with {bg}{suffix} is {ratio:.2f}:1, WCAG AA needs {MIN_CONTRAST}:1",
                )
    return out


def collect_settings(c: Collector, t: dict[str, Any]) -> PageSettings:
    """Validate ``[page]`` (every problem recorded in ``c`` with its key path)."""
    c.unknown_keys("page", t, KEYS)
    title = _text(c, t, "title", 120)
    return PageSettings(
        title=title,
        logo_url=_url(c, t, "logo_url"),
        logo_alt=_text(c, t, "logo_alt", 120) or title,
        contact=_text(c, t, "contact", 200),
        worldid_bridge=_url(c, t, "worldid_bridge", https_origin_only=True) or DEFAULT_BRIDGE,
        colors=_colors(c, t),
    )
