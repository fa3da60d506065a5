"""RFC 8941 parser/serializer: RFC examples, fuzzing (only Malformed escapes) and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import Headers, check_content_digest
from popgate.verifiers.structured_fields import (
    InnerList,
    Item,
    Token,
    parse_dictionary,
    parse_item,
    parse_list,
    serialize_member,
)


def test_rfc8941_examples() -> None:
    """Examples from RFC 8941 §3 parse to the documented values."""
    assert parse_list("sugar, tea, rum") == [
        Item(Token("sugar"), {}),
        Item(Token("tea"), {}),
        Item(Token("rum"), {}),
    ]
    assert parse_list('("foo" "bar"), ("baz"), ("bat" "one"), ()')[3] == InnerList([], {})
    assert parse_list('abc;a=1;b=2; cde_456, (ghi;jk=4 l);q="9";r=w')[1].params == {"q": "9", "r": Token("w")}
    d = parse_dictionary('en="Applepie", da=:w4ZibGV0w6ZydGU=:')
    assert d == {"en": Item("Applepie", {}), "da": Item("Æbletærte".encode(), {})}
    assert parse_dictionary("a=?0, b, c; foo=bar") == {
        "a": Item(False, {}),
        "b": Item(True, {}),
        "c": Item(True, {"foo": Token("bar")}),
    }
    assert parse_item("4.5") == Item(4.5, {}) and parse_item("-42") == Item(-42, {})


@pytest.mark.parametrize(
    "bad",
    [
        '"unterminated',
        "a=1,",
        "(a b",
        "1.2345",
        "1234567890123456",
        "?2",
        ":not base64!:",
        "a=1 b=2",
        '"\\x"',
        "é",
        "a, ,b",
        "-",
        "1.",
        "A=1",
    ],
)
def test_rejects(bad: str) -> None:
    """Malformed fields fail as a whole."""
    with pytest.raises(Malformed):
        parse_dictionary(bad) if "=" in bad or bad.startswith("A") else parse_list(bad)


@given(st.text(max_size=120))
def test_fuzz_only_malformed(s: str) -> None:
    """No input makes a parser raise anything but Malformed."""
    for f in (parse_item, parse_list, parse_dictionary):
        try:
            f(s)
        except Malformed:
            pass


ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10)
BARE = (
    st.integers(-(10**15) + 1, 10**15 - 1)
    | ASCII
    | st.binary(max_size=16)
    | st.booleans()
    | st.integers(-(10**6), 10**6).map(lambda i: i / 1000)
    | st.from_regex(r"[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+.^_`|~-]{0,8}", fullmatch=True).map(Token)
)
KEYS = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,6}", fullmatch=True)
PARAMS = st.dictionaries(KEYS, BARE, max_size=3)
ITEM = st.builds(Item, BARE, PARAMS)
MEMBER = ITEM | st.builds(InnerList, st.lists(ITEM, max_size=3), PARAMS)


@given(st.dictionaries(KEYS, MEMBER, min_size=1, max_size=4))
def test_dictionary_roundtrip(d: dict) -> None:
    """serialize -> parse is the identity on dictionaries (booleans true print bare)."""
    text = ", ".join(
        (
            k
            + "".join(
                f";{pk}" if pv is True else f";{pk}={serialize_member(Item(pv, {}))}"
                for pk, pv in m.params.items()
            )
        )
        if isinstance(m, Item) and m.value is True
        else f"{k}={serialize_member(m)}"
        for k, m in d.items()
    )
    assert parse_dictionary(text) == d


def test_rfc9421_content_digest_example() -> None:
    """RFC 9421 B.2's Content-Digest (sha-512) matches its body; a changed body does not."""
    h = Headers(
        {
            "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYl"
            "lu7BNNyealdVLvRwEmTHWXvJwew==:"
        }
    )
    check_content_digest(h, b'{"hello": "world"}')
    with pytest.raises(VerificationError) as e:
        check_content_digest(h, b'{"hello": "world!"}')
    assert e.value.reason == "bad_digest"
