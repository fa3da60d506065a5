"""Property tests for the puzzle parsers: never crash, only VerificationError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.verifiers import puzzle
from popgate.verifiers.errors import VerificationError

KEYS = puzzle.PuzzleKeys({"k1": b"k" * 32}, "k1")
NOW = 1_790_000_000.0
ALPH = st.characters(codec="ascii")


@given(st.text(ALPH, max_size=700))
def test_parse_solution_raises_only_verification_errors(value: str) -> None:
    """Arbitrary header values parse or raise Malformed; nothing else escapes."""
    try:
        wire, nonces = puzzle.parse_solution(value)
    except VerificationError as e:
        assert e.reason == "malformed"
        return
    assert wire.startswith("pz1.") and ":" not in wire and 1 <= len(nonces) <= puzzle.MAX_SUBS


@given(
    st.text(ALPH, max_size=600),
    st.lists(st.from_regex(r"[0-9]{1,6}", fullmatch=True), min_size=1, max_size=3),
)
def test_check_of_garbage_raises_verification_error(wire: str, nonces: list[str]) -> None:
    """Random challenge strings never verify and never raise anything but VerificationError."""
    try:
        puzzle.check(KEYS, "pz1." + wire, tuple(nonces), now=NOW, network="203.0.113.0/24")
    except VerificationError:
        return
    raise AssertionError("garbage verified")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 6),
    st.integers(1, 3),
    st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    st.binary(min_size=16, max_size=16),
)
def test_issue_solve_check_roundtrip(bits: int, subs: int, scope: str, rand: bytes) -> None:
    """Whatever the parameters, an issued challenge solved by the reference solver verifies."""
    c = puzzle.issue(KEYS, network="2001:db8::/64", scope=scope, bits=bits, now=NOW, subs=subs, rand=rand)
    nonces, tried = puzzle.solve(c.wire, bits, subs)
    assert tried >= subs
    wire, parsed = puzzle.parse_solution(f"{c.wire}:{','.join(nonces)}")
    got = puzzle.check(KEYS, wire, parsed, now=NOW, network="2001:db8::/64", scope=scope)
    assert (got.bits, got.subs, got.scope) == (bits, subs, scope)


@given(st.integers(0, 2**64 - 1), st.integers(0, 40))
def test_zero_bits_predicate_matches_definition(top: int, bits: int) -> None:
    """The fast leading-zero test agrees with counting bits."""
    digest = top.to_bytes(8, "big") + b"\xff" * 24
    leading = 64 - top.bit_length()
    assert puzzle._zero_bits_ok(digest, bits) == (leading >= bits)
