"""Hashcash v1 stamps: real stamps from the hashcash tool verify; altered ones do not."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers import hashcash
from popgate.verifiers.errors import VerificationError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hashcash" / "stamps.tsv"
# make_stamps.sh mints at 2026-11-20 12:34:56 UTC; check the next midnight.
NOW = calendar.timegm((2026, 11, 21, 0, 0, 0, 0, 0, 0))
MINTED = calendar.timegm((2026, 11, 20, 12, 34, 56, 0, 0, 0))


def stamps() -> list[tuple[str, str, int, int]]:
    rows = [line.split("\t") for line in FIXTURES.read_text().splitlines() if line]
    return [(s, r, int(b), int(w)) for s, r, b, w in rows]


def reason(e: pytest.ExceptionInfo[VerificationError]) -> str:
    return e.value.reason


@pytest.mark.parametrize("stamp, resource, bits, width", stamps())
def test_real_tool_stamps_verify(stamp: str, resource: str, bits: int, width: int) -> None:
    """Every stamp minted by `hashcash -m` verifies, with its date parsed at its width."""
    att = hashcash.check(stamp, resource=resource, now=NOW, min_bits=bits)
    assert att.bits >= bits and att.resource == resource
    expected = {6: MINTED - (12 * 3600 + 34 * 60 + 56), 10: MINTED - 56, 12: MINTED}[width]
    assert att.timestamp == expected


@pytest.mark.parametrize("stamp, resource, bits, width", stamps())
def test_altered_tool_stamps_fail(stamp: str, resource: str, bits: int, width: int) -> None:
    """Changing the counter, the resource or the claimed bits breaks the stamp."""
    fields = stamp.split(":")
    counter = fields[6]
    altered_counter = ":".join([*fields[:6], counter[:-1] + ("A" if counter[-1] != "A" else "B")])
    with pytest.raises(VerificationError) as e:
        hashcash.check(altered_counter, resource=resource, now=NOW, min_bits=bits)
    assert reason(e) == "insufficient_work"
    with pytest.raises(VerificationError) as e:
        hashcash.check(stamp, resource=resource + "x", now=NOW, min_bits=bits)
    assert reason(e) == "wrong_resource"
    inflated = ":".join([fields[0], str(bits + 20), *fields[2:]])
    with pytest.raises(VerificationError) as e:
        hashcash.check(inflated, resource=resource, now=NOW, min_bits=bits)
    assert reason(e) == "insufficient_work"


def test_min_bits_is_enforced_on_the_claim() -> None:
    """A genuine 16-bit stamp does not satisfy a 20-bit route."""
    stamp, resource, _, _ = next(s for s in stamps() if s[2] == 16)
    with pytest.raises(VerificationError) as e:
        hashcash.check(stamp, resource=resource, now=NOW, min_bits=20)
    assert reason(e) == "insufficient_work"


@pytest.mark.parametrize(
    "now, max_age, expected",
    [
        (MINTED - 3600, 86400, "not_yet_valid"),  # minted an hour in the "future"
        (MINTED + 2 * 86400, 86400, "expired"),
        (MINTED + 29 * 86400, hashcash.DEFAULT_MAX_AGE, "expired"),
    ],
)
def test_date_window(now: float, max_age: float, expected: str) -> None:
    """Stamps dated in the future (beyond skew) or older than max_age fail."""
    stamp = next(s for s, _, _, w in stamps() if w == 12)
    with pytest.raises(VerificationError) as e:
        hashcash.check(stamp, resource="api.example.com/v1", now=now, min_bits=16, max_age=max_age)
    assert reason(e) == expected


def test_small_skew_allowed() -> None:
    """A stamp a little (< skew) in the future is accepted."""
    stamp = next(s for s, _, _, w in stamps() if w == 12)
    hashcash.check(stamp, resource="api.example.com/v1", now=MINTED - 60, min_bits=16)


def test_known_published_stamps() -> None:
    """Stamps from the hashcash docs: the man page's 24-bit one, and Wikipedia's invalid example."""
    now = calendar.timegm((2004, 8, 7, 0, 0, 0, 0, 0, 0))
    hashcash.check("1:24:040806:foo::511801694b4cd6b0:1e7297a", resource="foo", now=now, min_bits=24)
    hashcash.check("1:20:040806:foo::831d0c6f22eb81ff:15eae4", resource="foo", now=now, min_bits=20)
    with pytest.raises(VerificationError) as e:
        hashcash.check(
            "1:20:1303030600:anni@cypherspace.org::McMybZIhxKXu57jd:ckvi",
            resource="anni@cypherspace.org",
            now=calendar.timegm((2013, 3, 3, 7, 0, 0)),
            min_bits=20,
        )
    assert reason(e) == "insufficient_work"


async def test_double_spend() -> None:
    """A stamp is accepted once per store."""
    store = MemoryStore()
    stamp, resource, bits, _ = stamps()[0]
    await spend(store, hashcash.check(stamp, resource=resource, now=NOW, min_bits=bits).spend)
    with pytest.raises(VerificationError) as e:
        await spend(store, hashcash.check(stamp, resource=resource, now=NOW, min_bits=bits).spend)
    assert reason(e) == "replayed"


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "1:20",
        "0:20:261120:r::a:b",
        "2:20:261120:r::a:b",
        "1:x:261120:r::a:b",
        "1:20:261320:r::a:b",
        "1:20:260230:r::a:b",
        "1:20:2611201:r::a:b",
        "1:20:261120:r::a b:c",
        "1:20:261120::::",
        "1:20:261120:r::a:b:c",
        "1:20:2611202460:r::a:b",
        "1:9999:261120:r::a:b",
        "1:20:261120:r::a:\u00e9",
    ],
)
def test_malformed(stamp: str) -> None:
    with pytest.raises(VerificationError) as e:
        hashcash.check(stamp, resource="r", now=NOW, min_bits=0)
    assert reason(e) == "malformed"


def test_reference_minter_interoperates() -> None:
    stamp, tries = hashcash.mint("api.example.com", 12, NOW, date_format="%y%m%d%H%M")
    att = hashcash.check(stamp, resource="api.example.com", now=NOW + 60, min_bits=12)
    assert att.bits >= 12 and tries >= 1


@given(st.text(st.characters(codec="ascii"), max_size=600))
def test_parse_never_crashes(text: str) -> None:
    """Any text parses or raises Malformed."""
    try:
        s = hashcash.parse(text)
    except VerificationError as e:
        assert e.reason == "malformed"
        return
    assert s.text == text and 0 <= s.bits <= 160


@given(
    st.integers(0, 99),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
def test_date_forms_roundtrip(yy: int, mo: int, dd: int, hh: int, mi: int, ss: int) -> None:
    """The three date widths parse to the same instant as calendar.timegm."""
    assert hashcash.parse_date(f"{yy:02}{mo:02}{dd:02}") == calendar.timegm((2000 + yy, mo, dd, 0, 0, 0))
    assert hashcash.parse_date(f"{yy:02}{mo:02}{dd:02}{hh:02}{mi:02}") == calendar.timegm(
        (2000 + yy, mo, dd, hh, mi, 0)
    )
    assert hashcash.parse_date(f"{yy:02}{mo:02}{dd:02}{hh:02}{mi:02}{ss:02}") == calendar.timegm(
        (2000 + yy, mo, dd, hh, mi, ss)
    )


@given(
    st.from_regex(
        r"1:[0-9]{1,2}:[0-9]{6}:[a-z.]{1,10}::[A-Za-z0-9+/=]{0,16}:[A-Za-z0-9+/=]{0,16}", fullmatch=True
    )
)
def test_structured_stamps_raise_only_verification_errors(stamp: str) -> None:
    """Well-shaped random stamps fail (or pass) only through VerificationError."""
    try:
        hashcash.check(stamp, resource="x", now=NOW, min_bits=0)
    except VerificationError:
        pass
