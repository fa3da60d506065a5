"""IDKit 4 rp_context signing and popgate's stateless nonces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers import worldid_rp as rp
from popgate.verifiers.errors import Malformed
from popgate.verifiers.evm import parse_address, recover_address
from popgate.verifiers.worldid import hash_to_field

KEY, OLD = bytes.fromhex("11" * 32), bytes.fromhex("22" * 32)
RP = 0x0387DF34F862CD4E


def test_message_layout_is_the_sdks() -> None:
    """version 1 ‖ nonce (32) ‖ created_at u64 BE ‖ expires_at u64 BE ‖ hashSignal(action) (32)."""
    m = rp.rp_message(5, 1000, 1300, "act")
    assert len(m) == 81 and m[0] == 1 and int.from_bytes(m[1:33], "big") == 5
    assert int.from_bytes(m[33:41], "big") == 1000 and int.from_bytes(m[41:49], "big") == 1300
    assert int.from_bytes(m[49:], "big") == hash_to_field(b"act")
    assert len(rp.rp_message(5, 1000, 1300, None)) == 49  # session requests: no action


def test_signature_recovers_to_the_rp_address() -> None:
    ctx = rp.rp_context(KEY, RP, "verify-human", 1_800_000_000, 300)
    assert ctx.rp_id == "rp_0387df34f862cd4e" and ctx.expires_at == ctx.created_at + 300
    sig = bytes.fromhex(ctx.signature[2:])
    assert len(sig) == 65 and sig[64] in (27, 28)
    msg = rp.rp_message(int(ctx.nonce, 16), ctx.created_at, ctx.expires_at, "verify-human")
    assert recover_address(rp.eip191_digest(msg), sig) == parse_address(rp.signer_address(KEY))


def test_nonces_check_without_state() -> None:
    keys = {"new": rp.nonce_key(KEY), "old": rp.nonce_key(OLD)}
    n = int(rp.rp_context(KEY, RP, "a", 1000, 300).nonce, 16)
    assert n < 2**248  # a field element with a zero top byte, as the SDK's
    assert rp.check_nonce(keys, n, RP, "a", 1100, 300) == 1000
    old = int(rp.rp_context(OLD, RP, "a", 1000, 300).nonce, 16)
    assert rp.check_nonce(keys, old, RP, "a", 1100, 300) == 1000  # rotation: an older key's nonce
    for bad in (
        lambda: rp.check_nonce({"new": keys["new"]}, old, RP, "a", 1100, 300),  # key removed
        lambda: rp.check_nonce(keys, n, RP, "b", 1100, 300),  # another action
        lambda: rp.check_nonce(keys, n, RP + 1, "a", 1100, 300),  # another rp id
        lambda: rp.check_nonce(keys, n, RP, "a", 1301, 300),  # expired
        lambda: rp.check_nonce(keys, n ^ 1, RP, "a", 1100, 300),  # altered
        lambda: rp.check_nonce(keys, 2**250, RP, "a", 1100, 300),
    ):
        with pytest.raises(rp.BadNonce):
            bad()


@pytest.mark.parametrize("bad", [b"", b"zz" * 32, b"11" * 31, b"00" * 32, b"ff" * 32])
def test_signing_key_rejects(bad: bytes) -> None:
    with pytest.raises(ValueError):
        rp.parse_signing_key(bad)


def test_signing_key_accepts_hex_with_prefix_and_newline() -> None:
    assert rp.parse_signing_key(b"0x" + b"11" * 32 + b"\n") == KEY


@given(st.one_of(st.none(), st.integers(), st.text(max_size=80), st.binary(max_size=40)))
def test_parse_nonce_never_crashes(value: object) -> None:
    try:
        n = rp.parse_nonce(value)
    except Malformed:
        return
    assert 0 <= n < 2**256


@given(st.integers(min_value=-(2**300), max_value=2**300), st.text(max_size=20))
def test_check_nonce_never_crashes(n: int, action: str) -> None:
    try:
        rp.check_nonce({"k": rp.nonce_key(KEY)}, n, RP, action, 0, 300)
    except rp.BadNonce:
        pass
