"""The challenge page's message catalogue and language choice.

One JSON file per language in ``gateway/static/i18n/`` (``en.json`` is the
reference: every file has exactly its keys and the same ``{placeholders}``,
checked at load). :func:`choose` picks the language: the ``popgate_lang``
cookie the language switcher sets, else the best ``Accept-Language`` match
(RFC 9110 weights, prefix match: ``pt-BR`` → ``pt``), else English.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

I18N = Path(__file__).parent.parent / "static" / "i18n"
LANGS = ("en", "de", "fr", "es", "pt", "ja", "zh")
DEFAULT = "en"
COOKIE = "popgate_lang"
_FIELD = re.compile(r"\{([a-z_]+)\}")
_RANGE = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*\Z")
MAX_HEADER = 512


class CatalogueError(Exception):
    """A language file lacks a key, has an extra one, or changes a placeholder."""


@cache
def messages(lang: str) -> dict[str, str]:
    """The catalogue for ``lang`` (one of :data:`LANGS`); checked against English."""
    if lang not in LANGS:
        raise KeyError(lang)
    data = json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))
    if lang != DEFAULT:
        _check(lang, data, messages(DEFAULT))
    return {str(k): str(v) for k, v in data.items()}


def _check(lang: str, data: dict[str, str], ref: dict[str, str]) -> None:
    if set(data) != set(ref):
        raise CatalogueError(f"{lang}.json: keys differ from en.json: {sorted(set(data) ^ set(ref))}")
    for k, v in ref.items():
        if set(_FIELD.findall(data[k])) != set(_FIELD.findall(v)):
            raise CatalogueError(f"{lang}.json: {k}: placeholders differ from en.json")


def parse_accept_language(header: str) -> list[str]:
    """Language tags of ``Accept-Language``, best first (q=0 and junk dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header[:MAX_HEADER].split(",")):
        m = _RANGE.match(part)
        if m is None:
            continue
        try:
            q = float(m.group(2)) if m.group(2) is not None else 1.0
        except ValueError:
            continue
        if 0 < q <= 1:
            ranked.append((-q, i, m.group(1).lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose(accept_language: str, cookie: str | None = None) -> str:
    """The page language: switcher cookie, then ``Accept-Language``, then English."""
    if cookie in LANGS:
        return str(cookie)
    for language in parse_accept_language(accept_language):
        if language == "*":
            return DEFAULT
        primary = language.split("-", 1)[0]
        if primary in LANGS:
            return primary
    return DEFAULT


def text(lang: str, key: str, **values: object) -> str:
    """One message with its ``{placeholders}`` filled (unknown ones stay as written)."""
    msg = messages(lang)[key]
    return _FIELD.sub(lambda m: str(values.get(m.group(1), m.group(0))), msg)
