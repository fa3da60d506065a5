"""``verifiers/x402_upto.py`` and ``verifiers/permit2.py`` offline: the SDK
client's own upto payloads verify; the digest equals eth-account's generic
EIP-712 hash for any field values; every field is bound by the signature."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto.client import UptoEvmScheme
from x402.schemas import PaymentRequirements

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.evm import parse_address
from popgate.verifiers.permit2 import upto_digest
from popgate.verifiers.x402 import Requirements, encode_header, parse_payment_signature
from popgate.verifiers.x402_upto import parse_permit, verify_upto
from tests.support.upto import requirements, signed_payment
from tests.support.upto_facilitator import upto_typed_data

KEY = "0x" + "7b" * 32
OFFER = Requirements.from_json(requirements())


def test_the_python_sdk_clients_payload_verifies() -> None:
    scheme = UptoEvmScheme(EthAccountSigner(Account.from_key(KEY)))
    inner = scheme.create_payment_payload(PaymentRequirements.model_validate(requirements()))
    header = encode_header({"x402Version": 2, "accepted": requirements(), "payload": inner})
    paid = verify_upto(parse_payment_signature(header), [OFFER], time.time())
    assert paid.payer == Account.from_key(KEY).address and paid.signature_checked
    assert paid.max_amount == int(OFFER.amount)
    assert paid.spend.kind == "permit2" and paid.spend.reason == "nonce_reused"
    assert paid.spend.ident == f"eip155:84532:{paid.payer.lower()}:{paid.nonce}"


addr = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
u256 = st.integers(min_value=0, max_value=2**256 - 1)


@given(token=addr, spender=addr, to=addr, fac=addr, amount=u256, nonce=u256, deadline=u256, after=u256)
def test_digest_matches_eth_account(
    token: str, spender: str, to: str, fac: str, amount: int, nonce: int, deadline: int, after: int
) -> None:
    a = {
        "permitted": {"token": token, "amount": str(amount)},
        "spender": spender,
        "nonce": str(nonce),
        "deadline": str(deadline),
        "witness": {"to": to, "facilitator": fac, "validAfter": str(after)},
    }
    ours = upto_digest(
        8453,
        token=parse_address(token),
        amount=amount,
        spender=parse_address(spender),
        nonce=nonce,
        deadline=deadline,
        to=parse_address(to),
        facilitator=parse_address(fac),
        valid_after=after,
    )
    assert ours == _hash_eip191_message(encode_typed_data(full_message=upto_typed_data(a, "eip155:8453")))


def test_high_s_is_refused() -> None:
    payment = parse_payment_signature(signed_payment(KEY))
    sig = bytes.fromhex(payment.payload["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = n - int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])  # v 27 <-> 28
    payload = {**payment.payload, "signature": "0x" + flipped.hex()}
    with pytest.raises(VerificationError) as err:
        verify_upto(
            payment.__class__(2, "upto", payment.network, payload, payment.accepted, payment.raw),
            [OFFER],
            time.time(),
        )
    assert err.value.reason == "high_s"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"permit2Authorization": {}, "signature": "0x00"},
        {"permit2Authorization": {"permitted": {}, "witness": {}}, "signature": "0x00"},
        {"authorization": {}, "signature": "0x00"},
    ],
)
def test_malformed_payloads(payload: dict[str, object]) -> None:
    with pytest.raises(Malformed):
        parse_permit(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
FIELDS = [
    "from",
    "spender",
    "nonce",
    "deadline",
    "permitted",
    "witness",
    "token",
    "amount",
    "to",
    "facilitator",
]


@given(
    auth=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
    sig=st.one_of(st.text(max_size=20), st.just("0x" + "ab" * 65), json_values),
)
def test_any_payload_is_a_permit_or_malformed(auth: dict[str, object], sig: object) -> None:
    """Arbitrary JSON never escapes as anything but Malformed (so never a 500)."""
    try:
        parse_permit({"permit2Authorization": auth, "signature": sig})
    except Malformed:
        pass
