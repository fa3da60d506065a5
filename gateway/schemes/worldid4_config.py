"""``[worldid.rp]`` and ``[worldid.chain]``: the IDKit 4 / World ID 4.0 settings.

[worldid.rp]                        # the relying party popgate signs rp_context for
rp_id = "rp_0123456789abcdef"       # required: the Developer Portal's RP id
keys = [{kid = "2026a", secret_file = "/etc/popgate/rp.key"}]  # 64 hex digits (secp256k1)
signing_kid = "2026a"               # signs new rp_contexts; older keys' nonces stay valid
ttl = 300                           # rp_context lifetime (seconds); nonces expire with it
environment = "production"          # | "staging": what IDKit is told
in_challenge = true                 # sign an rp_context into every 402 (~70 µs CPU each); false:
                                    # the 402 names the endpoint, a client GETs one when it starts

[worldid.chain]                     # chain facts for local 4.0 verification
source = "rpc"                      # | "static" | "file"
rpc_url = "http://127.0.0.1:8545"   # rpc: a World Chain JSON-RPC endpoint (eth_call)
verifier = "0x00000000009E00F9FE82CfeeBB4556686da094d7"  # WorldIDVerifier proxy (default: production)
poll_interval = 60                  # rpc/file: refresh period; stale data is used up to 10 periods
file = "/var/lib/popgate/chain.json"  # file: {"valid_roots", "issuer_keys", "oprf_keys", "tree_depth"}
valid_roots = ["0x..."]             # static: the same fields inline
issuer_keys = {"1" = ["0x..", "0x.."]}
oprf_keys = {"rp_0123456789abcdef" = ["0x..", "0x.."]}
tree_depth = 30

The signing key is never generated: without ``[worldid.rp]`` popgate offers
no rp_context (IDKit 4 clients cannot start a request) and refuses 4.0 results
unless ``cloud_verify_url`` is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from popgate.gateway.ops.validation import Collector, read_keyring
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.worldid_rp import nonce_key, parse_signing_key
from popgate.verifiers.worldid_v4 import StaticChain, chain_from_json, parse_rp_id

PRODUCTION_VERIFIER = "0x00000000009E00F9FE82CfeeBB4556686da094d7"
RP_KEYS = {"rp_id", "keys", "signing_kid", "ttl", "environment", "in_challenge"}
CHAIN_KEYS = {
    "source", "rpc_url", "verifier", "poll_interval", "file",
    "valid_roots", "issuer_keys", "oprf_keys", "tree_depth",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RpSettings:
    rp_id: int
    keys: dict[str, bytes]  # kid -> 32-byte secp256k1 key
    signing_kid: str
    ttl: int = 300
    environment: str = "production"
    nonce_keys: dict[str, bytes] = field(default_factory=dict)
    in_challenge: bool = True

    @property
    def signing_key(self) -> bytes:
        return self.keys[self.signing_kid]


@dataclass(frozen=True, slots=True)
class ChainSettings:
    source: str
    static: StaticChain | None = None
    file: str = ""
    rpc_url: str = ""
    verifier: str = PRODUCTION_VERIFIER
    poll_interval: float = 60.0


def collect_rp(c: Collector, t: dict[str, Any], env: Any) -> RpSettings | None:
    """Validate ``[worldid.rp]``; None (problems recorded) when invalid."""
    p = "worldid.rp"
    c.unknown_keys(p, t, RP_KEYS)
    before = len(c.problems)
    try:
        rp_id = parse_rp_id(t.get("rp_id"))
    except VerificationError:
        c.problem(f"{p}.rp_id", f"required: rp_ + 16 hex digits, got {t.get('rp_id')!r}")
        rp_id = 0
    secrets, signing = read_keyring(c, p, t, env)
    keys: dict[str, bytes] = {}
    for kid, secret in secrets.items():
        try:
            keys[kid] = parse_signing_key(secret)
        except ValueError as exc:
            c.problem(f"{p}.keys[{kid}]", str(exc))
    ttl = c.number(f"{p}.ttl", t.get("ttl", 300), lo=10, hi=86400, integer=True)
    environment = t.get("environment", "production")
    if environment not in ("production", "staging"):
        c.problem(f"{p}.environment", f"expected production or staging, got {environment!r}")
    in_challenge = t.get("in_challenge", True)
    if not isinstance(in_challenge, bool):
        c.problem(f"{p}.in_challenge", f"expected true or false, got {in_challenge!r}")
    if len(c.problems) > before or signing not in keys:
        return None
    nonce_keys = {kid: nonce_key(k) for kid, k in keys.items()}
    return RpSettings(rp_id, keys, signing, int(ttl or 300), str(environment), nonce_keys, in_challenge)


def collect_chain(c: Collector, t: dict[str, Any]) -> ChainSettings | None:
    """Validate ``[worldid.chain]``; None (problems recorded) when invalid."""
    p = "worldid.chain"
    c.unknown_keys(p, t, CHAIN_KEYS)
    source = t.get("source", "rpc")
    if source not in ("static", "file", "rpc"):
        c.problem(f"{p}.source", f"expected one of static, file, rpc, got {source!r}")
        return None
    interval = c.number(f"{p}.poll_interval", t.get("poll_interval", 60), lo=0.05, hi=86400)
    if source == "static":
        try:
            return ChainSettings("static", static=chain_from_json(t))
        except VerificationError as exc:
            c.problem(p, exc.detail)
            return None
    if source == "file":
        file = t.get("file")
        if not isinstance(file, str) or not file:
            c.problem(f"{p}.file", 'required for source = "file"')
            return None
        return ChainSettings("file", file=file, poll_interval=float(interval or 60))
    url, verifier = t.get("rpc_url", ""), t.get("verifier", PRODUCTION_VERIFIER)
    bad = False
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        c.problem(f"{p}.rpc_url", f"expected an http(s) URL, got {url!r}")
        bad = True
    if not isinstance(verifier, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", verifier):
        c.problem(f"{p}.verifier", f"expected a 0x-address, got {verifier!r}")
        bad = True
    if bad:
        return None
    return ChainSettings("rpc", rpc_url=url, verifier=verifier, poll_interval=float(interval or 60))
