"""Help text for ``popgate verify``: each scheme's case fields and output fields.

The same facts as README's ``popgate verify`` table; ``tests/gateway/cli/test_cli_help.py``
checks that every scheme in :data:`gateway.cli.verify.SCHEMES` has an entry here.
"""

from __future__ import annotations

# scheme -> (what it checks, case fields, output fields)
SCHEME_HELP: dict[str, tuple[str, str, str]] = {
    "session": (
        "a popgate session token (--config: the [sessions] keys)",
        "token",
        "class, subject, expires, scope",
    ),
    "groth16": (
        "a Groth16 proof against a snarkjs verification key",
        'vk, proof (snarkjs, {"packed": [8]} or {"compressed": [4]}), public',
        "n_public",
    ),
    "worldid": (
        "a World ID (IDKit) result",
        'app_id, action, signal (default ""), result, valid_roots, vk (optional)',
        "nullifier, merkle_root, verification_level",
    ),
    "zklogin": (
        "an OIDC id_token bound to an ephemeral key (--config optional: the [zklogin] table)",
        "jwt, jwks, issuer, audience, ext_eph_pk, max_epoch, randomness, epoch_mode, current_epoch, salt",
        "subject, address, iss, expires",
    ),
    "zklogin-nonce": ("computes a zkLogin nonce", "ext_eph_pk, max_epoch, randomness", "nonce"),
    "zklogin-proof": (
        "a full zkLogin proof (Groth16, production key by default)",
        "zklogin_signature, or inputs + ext_eph_pk + max_epoch; jwks or modulus; issuer, vk (optional)",
        "iss, kid, max_epoch, address, address_padded",
    ),
    "poseidon": ("computes a Poseidon hash (BN254)", "inputs (1-256 decimal strings)", "hash"),
    "webbotauth": (
        "a Web Bot Auth request signature (RFC 9421)",
        "method, url, headers, jwks, body (optional)",
        "keyid, subject, agent",
    ),
    "hashcash": (
        "a hashcash v1 stamp",
        "stamp, resource, min_bits (20), max_age_seconds (28 days), skew_seconds (300)",
        "bits, resource, date",
    ),
    "puzzle": (
        "a puzzle solution (--config: the [puzzle] keys)",
        "challenge, solution, network or client_ip, scope, min_bits (optional)",
        "network, scope, bits, subs, expires",
    ),
    "x402": (
        "an x402 payment header (--config optional: [x402] accept_v1)",
        "header_name (PAYMENT-SIGNATURE or X-PAYMENT), header_value, requirements",
        "payer, network, amount, nonce",
    ),
    "x402-batch": (
        "an x402 batch-settlement deposit, voucher or refund (one store per run: charges carry over)",
        "requirements, header_value, channel_state (SDK shape or null), onchain (or null)",
        "charged_after, kind, channel_id, payer",
    ),
    "x402-upto": (
        "an x402 upto (Permit2) authorization, offline (nonces spent once per run)",
        "header_value, requirements",
        "payer, network, max_amount, nonce, signature_checked",
    ),
    "privatepass": (
        "a Privacy Pass token, type 0x0002 (RFC 9577/9578; nonces spent once per run)",
        "token, challenge, issuer_keys or token_key, issuer, origin_info (optional)",
        "nonce, token_key_id, issuer, origin_info",
    ),
    "delegation": (
        "a delegated agent's signed request (--config: [sessions] keys, [delegation] windows)",
        "method, url, headers (Authorization: PoP <delegation>, RFC 9421 signature), body (optional)",
        "backed_by, keyid, scope, expires, quota",
    ),
}


def epilog() -> str:
    """Every scheme with its case and output fields, for ``popgate verify --help``."""
    lines = ["schemes (case fields -> output fields; every case may carry now, unix seconds):"]
    for scheme, (what, fields, output) in SCHEME_HELP.items():
        lines.append(f"  {scheme:<14} {what}")
        lines.append(f"  {'':<14}   case: {fields}")
        lines.append(f"  {'':<14}   out:  valid, reason, {output}")
    lines.append("")
    lines.append('example: echo \'{"inputs": ["1", "2"]}\' | popgate verify poseidon')
    return "\n".join(lines)
