"""Render the browser challenge page (``gateway/static/challenge.html``).

The template has ``{{name}}`` placeholders; :func:`render` fills each with the
HTML-escaped value (quotes included, so values are safe in attributes) and
refuses unknown or missing names. Built parts (the puzzle section, the way-out
panels of :mod:`gateway.pipeline.page_ways`, the language switcher, the
branding) replace ``<!--markers-->`` afterwards: escaped values never contain
``<``, so no value can forge a marker.

:class:`ChallengePage` is the gateway's ``html_challenge`` hook: it picks the
language (:mod:`gateway.pipeline.page_i18n`), builds the page for a 402 and
returns it with its Content-Security-Policy: scripts only from popgate itself
(``challenge.js``, the worker, the vendored IDKit widget), the page's one
``<style>`` and the widget's shadow-root stylesheet allowed by hash, network
access to popgate and the World ID bridge only. The return path is made safe
(a local path only, never ``//host``). The gateway serves the result with
status 402, never 200.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from popgate.gateway.pipeline import page_ways
from popgate.gateway.pipeline.page_i18n import COOKIE, LANGS, choose, messages, text
from popgate.gateway.pipeline.page_settings import PageSettings

STATIC = Path(__file__).parent.parent / "static"
PREFIX = "/.well-known/popgate/static/"
SCRIPT = PREFIX + "challenge.js"
WORKER = PREFIX + "challenge-worker.js"
IDKIT = PREFIX + "idkit-standalone.js"
IDKIT4 = PREFIX + "idkit-core.js"  # its WASM core is loaded from beside it
IDKIT4_WASM = PREFIX + "idkit_wasm_bg.wasm"
QRCODE = PREFIX + "qrcode.js"
SOLVER = PREFIX + "solve.py"
LANG_ENDPOINT = "/.well-known/popgate/lang"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_SAFE_PATH = re.compile(r"/(?![/\\])[^\x00-\x20\\#]*\Z")
JS_KEYS = (  # the messages challenge.js shows
    *("starting", "working", "done", "failed", "no_worker", "expired", "not_accepted", "network_error"),
    *("copied", "prove_loading", "prove_paused", "prove_ok", "prove_reused", "prove_refused"),
    *("prove_rate_limited", "prove_busy", "prove_failed", "prove_scan", "prove_open", "prove_waiting"),
    "prove_qr",
)
THOUSANDS = {"de": ".", "es": ".", "pt": ".", "fr": "\u202f"}  # digit grouping per language
LEVELS = ("device", "document", "secure_document", "orb")  # weakest first


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


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def json_for_script(data: object) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``<``, ``>``, ``&``)."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme == "https" and parts.netloc else ""


def widget_level(allowed: Any) -> str:
    """The IDKit ``verification_level`` (a minimum) for the gateway's allowed levels:
    the weakest allowed one, so every person the gateway accepts can prove."""
    return next((lv for lv in LEVELS if lv in allowed), "orb")


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""


def idkit4(worldid: Any) -> dict[str, Any] | None:
    """The offer's IDKit 4 request config when it carries (or points to) an rp_context."""
    idkit = worldid.get("idkit")
    if isinstance(idkit, dict) and (idkit.get("rp_context") or idkit.get("rp_context_from")):
        return idkit
    return None


class ChallengePage:
    """The ``html_challenge`` hook, built once from ``[page]``; see the module doc."""

    def __init__(self, settings: PageSettings | None = None, template: Path | None = None) -> None:
        s = self.s = settings or PageSettings()
        self.template = (template or STATIC / "challenge.html").read_text(encoding="utf-8")
        self.style = self._style(s)
        vendored = json.loads((STATIC / "vendor" / "idkit.json").read_text())
        style_src = " ".join([csp_hash(self.style)] + [f"'{h}'" for h in vendored["style_hashes"]])
        img = " ".join(filter(None, ("'self' data:", _origin(s.logo_url))))
        self.csp = (
            "default-src 'none'; script-src 'self'; worker-src 'self'; "
            f"style-src 'self' {style_src}; img-src {img}; font-src 'self'; "
            f"connect-src 'self' {s.worldid_bridge}; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        for lang in LANGS:
            messages(lang)  # a broken catalogue fails at start-up, not per request

    @staticmethod
    def _style(s: PageSettings) -> str:
        c = s.colors
        css = (STATIC / "challenge.css").read_text(encoding="utf-8")
        light = f"--pg-accent:{c['accent']};--pg-bg:{c['background']};--pg-fg:{c['text']}"
        dark = f"--pg-accent:{c['accent_dark']};--pg-bg:{c['background_dark']};--pg-fg:{c['text_dark']}"
        return f"\n:root{{{light}}}\n@media (prefers-color-scheme: dark){{:root{{{dark}}}}}\n{css}"

    def headers(self, wasm: bool = False) -> dict[str, str]:
        """``wasm``: the page offers IDKit 4, whose WASM core must compile ('wasm-unsafe-eval'
        allows WebAssembly compilation only, no eval() of JavaScript)."""
        csp = (
            self.csp.replace("script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';")
            if wasm
            else self.csp
        )
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Language": "",
            "Vary": "Accept, Accept-Language, Cookie",
        }

    def __call__(self, request: Any, challenge: Any) -> tuple[str, dict[str, str]]:
        lang = choose(request.headers.get("Accept-Language", ""), request.cookies.get(COOKIE))
        ways = [(w.kind, w.params) for w in challenge.ways_out]
        page = self.page(lang, ways, request.path_qs, str(request.url), challenge.detail)
        worldid = next((p for k, p in ways if k == "prove" and p.get("method") == "worldid"), None)
        headers = self.headers(wasm=worldid is not None and idkit4(worldid) is not None)
        headers["Content-Language"] = lang
        return page, headers

    def page(self, lang: str, ways: list[tuple[str, Any]], path: str, url: str, detail: str = "") -> str:
        """The page in ``lang`` for these way outs (``(kind, params)``), returning to ``path``."""
        return_to = safe_return_path(path)
        puzzle = next((p for k, p in ways if k == "puzzle"), None)
        worldid = next((p for k, p in ways if k == "prove" and p.get("method") == "worldid"), None)
        s, t = self.s, messages(lang)
        values: dict[str, object] = {
            "lang": lang,
            "title": f"{s.title}: {t['title']}" if s.title else t["title"],
            "heading": t["heading"],
            "ways_heading": t["ways_heading"] if puzzle is not None else t["ways_heading_only"],
            "return_note": text(lang, "return_note", path=return_to),
            "why": t["why"],
            "script": SCRIPT,
        }
        panels = page_ways.panels(lang, ways, return_to, url)
        data = self._data(lang, return_to, puzzle, worldid)
        parts = {
            "<!--style-->": f"<style>{self.style}</style>",
            "<!--brand-->": self._brand(),
            "<!--puzzle-->": self._puzzle(lang, puzzle, return_to, detail, _base(url)),
            "<!--ways-->": panels or f"<p>{html.escape(t['no_ways'])}</p>",
            "<!--langs-->": self._langs(lang, return_to),
            "<!--contact-->": self._contact(lang),
            "<!--data-->": json_for_script(data),
        }
        out = render(self.template, values)
        for marker, built in parts.items():
            out = out.replace(marker, built, 1)
        return out

    def _data(self, lang: str, return_to: str, puzzle: Any, worldid: Any) -> dict[str, Any]:
        t = messages(lang)
        data: dict[str, Any] = {"return": return_to, "worker": WORKER, "messages": {k: t[k] for k in JS_KEYS}}
        if puzzle is not None:
            data["puzzle"] = {
                "challenge": str(puzzle["challenge"]),
                "bits": int(puzzle["bits"]),
                "subs": int(puzzle.get("subs", 1)),
                "expires": int(puzzle["expires"]),
                "submit": page_ways.local_path(puzzle.get("submit")) or "/.well-known/popgate/puzzle",
            }
        if worldid is not None:
            data["worldid"] = {
                "app_id": str(worldid.get("app_id", "")),
                "action": str(worldid.get("action", "")),
                "signal": "",
                "verification_level": widget_level(worldid.get("verification_levels") or LEVELS),
                "endpoint": page_ways.local_path(worldid.get("endpoint")) or "/.well-known/popgate/worldid",
                "bridge_url": self.s.worldid_bridge,
                "script": IDKIT,
            }
            idkit = idkit4(worldid)
            if idkit is not None:
                data["worldid"]["idkit4"] = {  # IDKit 4 (the legacy widget stays the fallback)
                    **{k: idkit.get(k) for k in ("app_id", "action", "rp_context", "allow_legacy_proofs")},
                    "environment": idkit.get("environment", "production"),
                    "rp_context_from": page_ways.local_path(idkit.get("rp_context_from")) or None,
                    "script": IDKIT4,
                    "qrcode": QRCODE,
                }
        return data

    def _puzzle(self, lang: str, p: Any, return_to: str, detail: str, base: str) -> str:
        if p is None:
            return f"<p>{html.escape(detail or text(lang, 'reason'))}</p>"
        e = html.escape
        bits, subs = int(p["bits"]), int(p.get("subs", 1))
        hashes = f"{subs * (1 << bits):,}".replace(",", THOUSANDS.get(lang, ","))
        intro = text(lang, "work_intro", hashes=hashes)
        submit = page_ways.local_path(p.get("submit")) or "/.well-known/popgate/puzzle"
        cmd = f"python3 solve.py '{p['challenge']}' {bits} {subs}"
        return (
            f'<section id="popgate-puzzle"><p>{e(text(lang, "reason"))} {e(intro)}</p>'
            f'<div class="js-only"><label for="popgate-progress">{e(text(lang, "progress"))}</label>'
            '<progress id="popgate-progress" max="100" value="0">0%</progress></div>'
            '<p id="popgate-status" role="status" aria-live="polite" aria-atomic="true"></p>'
            f'<p><button type="button" id="popgate-retry" hidden>{e(text(lang, "retry"))}</button></p>'
            f'<noscript><div class="panel"><h2>{e(text(lang, "noscript_heading"))}</h2>'
            f"<p>{e(text(lang, 'noscript_text'))}</p>"
            f"<pre><code>curl -sO '{e(base + SOLVER)}'\n{e(cmd)}</code></pre>"
            f'<p><a href="{e(SOLVER)}">solve.py</a> (Python 3, standard library)</p>'
            f'<form method="post" action="{e(submit)}">'
            f'<input type="hidden" name="return_to" value="{e(return_to)}">'
            f'<label for="popgate-solution">{e(text(lang, "solution_label"))}</label> '
            '<input id="popgate-solution" name="solution" required autocomplete="off" spellcheck="false">'
            f' <button type="submit">{e(text(lang, "submit"))}</button></form></div></noscript></section>'
        )

    def _langs(self, lang: str, return_to: str) -> str:
        items = []
        for code in LANGS:
            href = f"{LANG_ENDPOINT}?l={code}&return={quote(return_to, safe='/')}"
            current = ' aria-current="true"' if code == lang else ""
            name = html.escape(messages(code)["language_name"])
            items.append(
                f'<li><a href="{html.escape(href)}" hreflang="{code}" lang="{code}"{current}>{name}</a></li>'
            )
        label = html.escape(text(lang, "language"))
        return f'<nav aria-label="{label}"><ul class="langs">{"".join(items)}</ul></nav>'

    def _brand(self) -> str:
        s = self.s
        if not (s.title or s.logo_url):
            return ""
        logo = ""
        if s.logo_url:
            logo = f'<img src="{html.escape(s.logo_url)}" alt="{html.escape(s.logo_alt)}" height="40">'
        title = f'<span class="brand-title">{html.escape(s.title)}</span>' if s.title else ""
        return f'<header class="brand">{logo}{title}</header>'

    def _contact(self, lang: str) -> str:
        if not self.s.contact:
            return ""
        return f'<p class="contact">{html.escape(text(lang, "contact"))}: {html.escape(self.s.contact)}</p>'
