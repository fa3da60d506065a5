"""Property tests for the proof/number parsers: every input either parses to
what it encodes or raises a VerificationError; nothing else escapes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.verifiers.bn254 import curve as c
from popgate.verifiers.bn254.fields import P, R
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import Proof, parse_proof, parse_public, parse_uint

U256 = st.integers(min_value=0, max_value=(1 << 256) - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda kids: (
        st.lists(kids, max_size=9)
        | st.dictionaries(
            st.sampled_from(["pi_a", "pi_b", "pi_c", "packed", "compressed", "protocol", "curve", "x"]),
            kids,
            max_size=4,
        )
    ),
    max_leaves=30,
)
scalars = st.integers(min_value=1, max_value=R - 1)


@given(U256)
def test_uint_spellings_round_trip(n: int) -> None:
    """Decimal, 0x-hex (either case) and int spellings of a uint256 parse to it."""
    assert parse_uint(str(n)) == parse_uint(hex(n)) == parse_uint(hex(n).upper().replace("0X", "0x")) == n
    assert parse_uint(n) == n


@given(st.text(max_size=90))
def test_uint_parser_only_raises_malformed(s: str) -> None:
    """Arbitrary text is a uint256 or Malformed."""
    try:
        n = parse_uint(s)
    except Malformed:
        return
    assert 0 <= n < 1 << 256


@given(st.integers().filter(lambda n: n < 0 or n >= 1 << 256))
def test_out_of_range_ints_are_malformed(n: int) -> None:
    """Negative numbers and numbers of more than 256 bits are refused."""
    try:
        parse_uint(n)
    except Malformed:
        return
    raise AssertionError("accepted")


@settings(max_examples=300)
@given(json_values)
def test_proof_parser_never_crashes(obj: Any) -> None:
    """Any JSON value parses or raises a VerificationError subclass."""
    try:
        parse_proof(obj)
    except VerificationError:
        pass


@settings(max_examples=200)
@given(st.lists(U256, min_size=8, max_size=8))
def test_random_packed_words_never_crash(words: list[int]) -> None:
    """Random uint256[8] (as list and as ABI hex) parse only to on-curve points."""
    for enc in (words, "0x" + "".join(f"{w:064x}" for w in words)):
        try:
            p = parse_proof(enc)
        except VerificationError:
            continue
        assert c.g1_on_curve(p.a) and c.g2_on_curve(p.b) and c.g1_on_curve(p.c)


@settings(max_examples=200)
@given(st.lists(U256, min_size=4, max_size=4))
def test_random_compressed_words_never_crash(words: list[int]) -> None:
    """Random uint256[4] decompress to valid points or raise."""
    try:
        p = parse_proof({"compressed": words})
    except VerificationError:
        return
    assert c.g1_on_curve(p.a) and c.g2_on_curve(p.b) and c.g1_on_curve(p.c)


@settings(max_examples=15, deadline=None)
@given(scalars, scalars, scalars)
def test_the_three_encodings_agree(a: int, b: int, k: int) -> None:
    """snarkjs JSON, EIP-197 packed (B imaginary-first) and compressed encodings of
    the same points parse to the same Proof."""
    pa, pb, pc = c.g1_mul(c.G1_GEN, a), c.g2_mul(c.G2_GEN, b), c.g1_mul(c.G1_GEN, k)
    assert pa is not None and pb is not None and pc is not None
    (bx0, bx1), (by0, by1) = pb
    snark = {
        "pi_a": [str(pa[0]), str(pa[1]), "1"],
        "pi_b": [[str(bx0), str(bx1)], [str(by0), str(by1)], ["1", "0"]],
        "pi_c": [str(pc[0]), str(pc[1]), "1"],
        "protocol": "groth16",
        "curve": "bn128",
    }
    packed = [pa[0], pa[1], bx1, bx0, by1, by0, pc[0], pc[1]]
    cb0, cb1 = c.g2_compress(pb)
    compressed = [c.g1_compress(pa), cb1, cb0, c.g1_compress(pc)]
    want = Proof(pa, pb, pc)
    assert parse_proof(snark) == parse_proof({"packed": [hex(x) for x in packed]}) == want
    assert parse_proof({"compressed": compressed}) == want


@given(st.lists(st.integers(min_value=0, max_value=P), max_size=6))
def test_public_inputs_parse_or_malformed(values: list[int]) -> None:
    """Public inputs parse as given (range against r is the verifier's check)."""
    assert parse_public([str(v) for v in values]) == values
