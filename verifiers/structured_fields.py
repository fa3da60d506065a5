"""RFC 8941 Structured Field Values: the parser and serializer popgate needs
for ``Signature-Input``, ``Signature``, ``Signature-Agent`` and
``Content-Digest``.

Values: ``int``, ``float`` (decimals; serialized with up to 3 fraction digits),
``str`` (sf-string), :class:`Token`, ``bytes`` (byte sequence), ``bool``.
Members are :class:`Item` ``(value, params)`` or :class:`InnerList`
``(items, params)``; params and dictionaries are ``dict`` (insertion ordered,
a repeated key keeps its first position and its last value, as RFC 8941 says).

Every parse function raises :class:`verifiers.errors.Malformed` on any
syntax error (RFC 8941 says to fail the whole field); never another
exception for ``str`` input.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from popgate.verifiers.errors import Malformed

__all__ = [
    "BareItem",
    "InnerList",
    "Item",
    "Member",
    "Token",
    "parse_dictionary",
    "parse_item",
    "parse_list",
    "serialize_bare",
    "serialize_inner_list",
    "serialize_item",
    "serialize_member",
    "serialize_params",
]


class Token(str):
    """An sf-token (distinct from an sf-string)."""

    __slots__ = ()


BareItem = int | float | str | bytes | bool | Token


class Item(NamedTuple):
    value: BareItem
    params: dict[str, BareItem]


class InnerList(NamedTuple):
    items: list[Item]
    params: dict[str, BareItem]


Member = Item | InnerList

_B64 = re.compile(r"[A-Za-z0-9+/=]*")
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\\"])*)"')
_UNESCAPE = re.compile(r"\\(.)")
_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
MAX_FIELD = 8192


class _P:
    __slots__ = ("i", "s")

    def __init__(self, s: str) -> None:
        if not isinstance(s, str) or len(s) > MAX_FIELD or not s.isascii():
            raise Malformed(detail="structured field not ASCII or too long")
        self.s, self.i = s.strip(" "), 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def fail(self, why: str) -> Malformed:
        return Malformed(detail=f"structured field: {why} at {self.i}")

    def done(self) -> bool:
        return self.i >= len(self.s)

    def key(self) -> str:
        m = _KEY.match(self.s, self.i)
        if m is None:
            raise self.fail("bad key")
        self.i = m.end()
        return m.group()

    def params(self) -> dict[str, BareItem]:
        out: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.i += 1
            self.sp()
            k = self.key()
            v: BareItem = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare()
            out[k] = v
        return out

    def bare(self) -> BareItem:
        c = self.peek()
        if c == "-" or (c.isdigit() and c):
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.bytes_()
        if c == "?":
            self.i += 1
            b = self.peek()
            if b not in ("0", "1") or not b:
                raise self.fail("bad boolean")
            self.i += 1
            return b == "1"
        m = _TOKEN.match(self.s, self.i)
        if m is not None:
            self.i = m.end()
            return Token(m.group())
        raise self.fail("bad item")

    def number(self) -> int | float:
        m = _NUMBER.match(self.s, self.i)
        if m is None:
            raise self.fail("bad number")
        self.i = m.end()
        text = m.group()
        digits = text.lstrip("-")
        if "." in text:
            whole, _, frac = digits.partition(".")
            if len(whole) > 12 or not 1 <= len(frac) <= 3:
                raise self.fail("bad decimal")
            return float(text)
        if len(digits) > 15:
            raise self.fail("integer too long")
        return int(text)

    def string(self) -> str:
        m = _STRING.match(self.s, self.i)
        if m is None:
            raise self.fail("bad string")
        self.i = m.end()
        body = m.group(1)
        return _UNESCAPE.sub(r"\1", body) if "\\" in body else body

    def bytes_(self) -> bytes:
        self.i += 1
        end = self.s.find(":", self.i)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        text = self.s[self.i : end]
        self.i = end + 1
        if not _B64.fullmatch(text):
            raise self.fail("bad base64")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.fail("bad base64") from exc

    def item(self) -> Item:
        v = self.bare()
        return Item(v, self.params())

    def member(self) -> Member:
        if self.peek() != "(":
            return self.item()
        self.i += 1
        items: list[Item] = []
        while True:
            self.sp()
            if self.peek() == ")":
                self.i += 1
                return InnerList(items, self.params())
            items.append(self.item())
            if self.peek() not in (" ", ")") or not self.peek():
                raise self.fail("bad inner list")

    def next_member(self) -> bool:
        """After a member: True if another follows (comma consumed)."""
        self.ows()
        if self.done():
            return False
        if self.peek() != ",":
            raise self.fail("expected comma")
        self.i += 1
        self.ows()
        if self.done():
            raise self.fail("trailing comma")
        return True


def parse_item(s: str) -> Item:
    """Parse an sf-item; raises Malformed."""
    p = _P(s)
    it = p.item()
    if not p.done():
        raise p.fail("trailing characters")
    return it


def parse_list(s: str) -> list[Member]:
    """Parse an sf-list; raises Malformed."""
    p = _P(s)
    out: list[Member] = []
    if p.done():
        return out
    while True:
        out.append(p.member())
        if not p.next_member():
            return out


def parse_dictionary(s: str) -> dict[str, Member]:
    """Parse an sf-dictionary; raises Malformed."""
    p = _P(s)
    out: dict[str, Member] = {}
    if p.done():
        return out
    while True:
        k = p.key()
        if p.peek() == "=":
            p.i += 1
            out[k] = p.member()
        else:
            out[k] = Item(True, p.params())
        if not p.next_member():
            return out


def serialize_bare(v: BareItem) -> str:
    """Serialize a bare item; raises ValueError for values RFC 8941 can't carry."""
    if isinstance(v, bool):
        return "?1" if v else "?0"
    if isinstance(v, int):
        if abs(v) > 999_999_999_999_999:
            raise ValueError("integer out of range")
        return str(v)
    if isinstance(v, float):
        text = f"{round(v, 3):.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(v, Token):
        return str(v)
    if isinstance(v, str):
        if not _PRINTABLE.fullmatch(v):
            raise ValueError("string not printable ASCII")
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (bytes, bytearray)):
        return ":" + base64.b64encode(v).decode() + ":"
    raise ValueError(f"cannot serialize {type(v).__name__}")


def serialize_params(params: dict[str, BareItem]) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare(v)}" for k, v in params.items())


def serialize_item(it: Item) -> str:
    return serialize_bare(it.value) + serialize_params(it.params)


def serialize_inner_list(il: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in il.items) + ")" + serialize_params(il.params)


def serialize_member(m: Member) -> str:
    return serialize_inner_list(m) if isinstance(m, InnerList) else serialize_item(m)
