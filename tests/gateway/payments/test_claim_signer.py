"""The receiver authorizer's claim-batch signature, byte for byte the SDK's,
and its key handled as a secret (config from a file, never shown)."""

from __future__ import annotations

from pathlib import Path

import pytest
from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner, sign_claim_batch
from x402.mechanisms.evm.batch_settlement.types import ChannelConfig, VoucherClaim
from x402.schemas import PaymentRequirements

from popgate.gateway.ops.validation import Collector
from popgate.gateway.payments.batch_settings import parse_batch
from popgate.gateway.payments.claim_signer import ClaimSigner
from tests.support.batch import RECEIVER_AUTHORIZER, RECEIVER_AUTHORIZER_KEY, Payer, offer

KEY = RECEIVER_AUTHORIZER_KEY


def test_signature_equals_the_sdks_sign_claim_batch() -> None:
    req = offer(1000)
    claims, entries = [], []
    for i, (smax, total) in enumerate([(5000, 5000), (7000, 3000), (1, 0)]):
        p = Payer(0x40 + i)
        cfg: ChannelConfig = p.client.build_channel_config(PaymentRequirements(**req.to_json()))
        claims.append(VoucherClaim(cfg, str(smax), "0x", str(total)))
        entries.append((bytes.fromhex(p.channel_id(req)[2:]), smax, total))
    sdk = sign_claim_batch(LocalAuthorizerSigner(KEY), claims, req.network)
    signer = ClaimSigner(KEY.encode())
    assert signer.address == RECEIVER_AUTHORIZER
    assert signer.sign(entries, int(req.network.split(":")[1])) == sdk.lower()


def test_bad_entries_and_keys_are_refused() -> None:
    signer = ClaimSigner(KEY.encode())
    with pytest.raises(ValueError):
        signer.sign([(b"\x01" * 32, 5, 6)], 84532)  # totalClaimed above the voucher
    with pytest.raises(ValueError):
        signer.sign([(b"\x01" * 31, 5, 5)], 84532)
    for bad in (b"", b"0x1234", b"zz" * 32, b"00" * 32):
        with pytest.raises(ValueError) as exc:
            ClaimSigner(bad)
        assert bad.decode() not in str(exc.value) or not bad
    assert KEY[2:] not in repr(signer) and RECEIVER_AUTHORIZER in repr(signer)


def table(tmp_path: Path, key: str, **extra: object) -> dict[str, object]:
    f = tmp_path / "ra.key"
    f.write_text(key + "\n")
    return {
        "receiver_authorizer": RECEIVER_AUTHORIZER,
        "receiver_authorizer_key": {"secret_file": str(f)},
        **extra,
    }


def test_config_reads_the_key_from_a_file_and_checks_its_address(tmp_path: Path) -> None:
    c = Collector({}, [])
    got = parse_batch(c, table(tmp_path, KEY), {})
    assert c.problems == [] and got is not None and got.claim_signer is not None
    assert got.claim_signer.address == RECEIVER_AUTHORIZER
    assert KEY[2:] not in repr(got)
    other = "0x" + "44" * 32
    c = Collector({}, [])
    assert parse_batch(c, table(tmp_path, other), {}) is None
    text = " ".join(str(p) for p in c.problems)
    assert "receiver_authorizer_key" in text and "44" * 32 not in text
    c = Collector({}, [])
    assert parse_batch(c, table(tmp_path, "not-a-key-but-long-enough-to-pass-the-length-check"), {}) is None
    assert "not a secp256k1 private key" in " ".join(str(p) for p in c.problems)
    c = Collector({}, [])
    assert (
        parse_batch(
            c, {"receiver_authorizer": RECEIVER_AUTHORIZER, "receiver_authorizer_key": {"secret": KEY}}, {}
        )
        is None
    )
    assert KEY[2:] not in " ".join(str(p) for p in c.problems)
    c = Collector({}, [])
    got = parse_batch(
        c,
        {"receiver_authorizer": RECEIVER_AUTHORIZER, "receiver_authorizer_key": {"secret_env": "RA"}},
        {"RA": KEY},
    )
    assert c.problems == [] and got is not None and got.claim_signer is not None
