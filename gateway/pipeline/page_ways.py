"""The challenge page's panels, one per way out a person can use.

Each builder takes the 402's way-out parameters and returns HTML in which
every value is escaped: ``prove`` (World ID widget button), ``signin`` (one
link per OpenID provider), ``pay`` (x402 amount, recipient, snippet),
``credits`` (API key snippet) and ``hashcash``. Kinds a browser cannot use
(``zklogin``: its browser path is ``signin``; ``pay-per-crawl``: crawlers) and
unknown kinds are not shown: the page lists only ways that work.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from decimal import Decimal
from html import escape
from typing import Any
from urllib.parse import quote

from popgate.gateway.pipeline.page_i18n import text

Params = Mapping[str, Any]


class Snippets:
    """Numbers the copyable code blocks of one page (ids for the copy buttons)."""

    def __init__(self, lang: str) -> None:
        self.lang, self.n = lang, 0

    def block(self, code: str) -> str:
        self.n += 1
        sid = f"popgate-snippet-{self.n}"
        return (
            f'<div class="snippet"><pre id="{sid}"><code>{escape(code)}</code></pre>'
            f'<button type="button" class="copy js-only" data-copy="{sid}">'
            f"{escape(text(self.lang, 'copy'))}</button></div>"
        )


def _section(kind: str, heading: str, body: str) -> str:
    hid = f"popgate-{kind}-h"
    return (
        f'<section class="way" id="popgate-{kind}" aria-labelledby="{hid}">'
        f'<h3 id="{hid}">{escape(heading)}</h3>{body}</section>'
    )


def local_path(value: object) -> str:
    """``value`` if it is a local absolute path (not ``//host``), else ``""``."""
    v = value if isinstance(value, str) else ""
    return v if v.startswith("/") and not v.startswith(("//", "/\\")) and len(v) < 2048 else ""


def prove(lang: str, p: Params, return_to: str, snippets: Snippets) -> str:
    body = (
        f"<p>{escape(text(lang, 'prove_text'))}</p>"
        f'<p class="js-only"><button type="button" id="popgate-worldid">'
        f"{escape(text(lang, 'prove_button'))}</button></p>"
        f'<p class="nojs-only">{escape(text(lang, "prove_needs_js"))}</p>'
        '<p id="popgate-prove-status" role="status" aria-live="polite"></p>'
        '<div id="popgate-connect" hidden></div>'
    )
    return _section("prove", text(lang, "prove_heading"), body)


def signin(lang: str, ways: list[Params], return_to: str) -> str:
    items = []
    for p in ways:
        href, provider = local_path(p.get("href")), str(p.get("provider") or "")
        if not href or not provider:
            continue
        sep = "&" if "?" in href else "?"
        url = f"{href}{sep}return={quote(return_to, safe='/')}"
        label = text(lang, "signin_button", provider=provider)
        items.append(f'<li><a class="button" href="{escape(url)}">{escape(label)}</a></li>')
    if not items:
        return ""
    body = f'<p>{escape(text(lang, "signin_text"))}</p><ul class="buttons">{"".join(items)}</ul>'
    return _section("signin", text(lang, "signin_heading"), body)


def _amount(offer: Params) -> tuple[str, str]:
    got = offer.get("extra")
    extra: Params = got if isinstance(got, dict) else {}
    name = str(extra.get("name") or offer.get("asset") or "")
    raw = str(offer.get("amount", ""))
    decimals = 6 if name in ("USDC", "USD Coin") else None
    if raw.isdigit() and decimals is not None:
        return f"{(Decimal(raw) / 10**decimals).normalize():f}", "USDC"
    return raw, name


def pay(lang: str, p: Params, url: str, snippets: Snippets) -> str:
    accepts = [a for a in p.get("accepts") or () if isinstance(a, dict)]
    if not accepts:
        return ""
    offers = []
    for a in accepts:
        amount, asset = _amount(a)
        line = text(
            lang,
            "pay_text",
            amount=amount,
            asset=asset,
            network=a.get("network", ""),
            pay_to=a.get("payTo", ""),
        )
        offers.append(f"<p>{escape(line)}</p>")
    header = str(p.get("header") or "PAYMENT-SIGNATURE")
    code = (
        f"curl -si -H 'Accept: application/json' {shlex.quote(url)}   # the offers (PAYMENT-REQUIRED)\n"
        f"curl -H '{header}: <base64 x402 payment payload>' {shlex.quote(url)}"
    )
    return _section("pay", text(lang, "pay_heading"), offers[0] + "".join(offers[1:]) + snippets.block(code))


def credits(lang: str, p: Params, url: str, snippets: Snippets) -> str:
    price = p.get("price", "")
    body = f"<p>{escape(text(lang, 'credits_text', price=price))}</p>"
    body += snippets.block(f"curl -H 'Authorization: Bearer <api key>' {shlex.quote(url)}")
    topup = local_path(p.get("topup"))
    if topup:
        body += f"<p>{escape(text(lang, 'credits_topup', topup=topup))}</p>"
    return _section("credits", text(lang, "credits_heading"), body)


def hashcash(lang: str, p: Params, url: str, snippets: Snippets) -> str:
    line = text(lang, "hashcash_text", bits=p.get("bits", ""), resource=p.get("resource", ""))
    return _section("hashcash", text(lang, "hashcash_heading"), f"<p>{escape(line)}</p>")


Panel = Callable[[str, Params, str, Snippets], str]
PANELS: dict[str, Panel] = {"pay": pay, "credits": credits, "hashcash": hashcash}


def panels(lang: str, ways: list[tuple[str, Params]], return_to: str, url: str) -> str:
    """Every usable way out as HTML, in a stable order: prove, sign in, pay, credits, hashcash."""
    snippets = Snippets(lang)
    out: list[str] = []
    first_prove = next((p for k, p in ways if k == "prove" and p.get("method") == "worldid"), None)
    if first_prove is not None:
        out.append(prove(lang, first_prove, return_to, snippets))
    out.append(signin(lang, [p for k, p in ways if k == "signin"], return_to))
    for kind in ("pay", "credits", "hashcash"):
        first = next((p for k, p in ways if k == kind), None)
        if first is not None:
            out.append(PANELS[kind](lang, first, url, snippets))
    return "".join(o for o in out if o)
