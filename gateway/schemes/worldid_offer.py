"""What a client needs to start a World ID request: the action in force, and, with
``[worldid.rp]``, a freshly signed IDKit 4 ``rp_context`` (``GET`` on the exchange
endpoint and the 402's ``prove`` way out both answer :func:`offer`)."""

from __future__ import annotations

from typing import Any

from popgate.gateway.schemes.worldid_config import WorldIdSettings
from popgate.verifiers.worldid import FOREVER
from popgate.verifiers.worldid_rp import rp_context

ENDPOINT = "/.well-known/popgate/worldid"


def current_action(s: WorldIdSettings, now: float) -> str:
    """The action string a proof must be made for at ``now`` (see gateway.schemes.worldid)."""
    if not s.period:
        return s.action
    return f"{s.action}/{s.rotate[0]}{int(now // s.period)}"


def claim_ttl(s: WorldIdSettings, now: float) -> float:
    """How long a spent nullifier is remembered: its period (+ one spare), or ten years."""
    if not s.period:
        return FOREVER
    return (int(now // s.period) + 2) * s.period - now


def idkit4_request(s: WorldIdSettings, now: float, action: str, sign: bool = True) -> dict[str, Any] | None:
    """The ``IDKit.request`` config a client needs (None without ``[worldid.rp]``); with
    ``sign`` False the rp_context is left for the client to ``GET`` from the endpoint."""
    if s.rp is None:
        return None
    ctx = rp_context(s.rp.signing_key, s.rp.rp_id, action, now, s.rp.ttl).as_json() if sign else None
    out: dict[str, Any] = {
        "app_id": s.app_id,
        "action": action,
        "rp_context": ctx,
        "allow_legacy_proofs": s.legacy,
        "environment": s.rp.environment,
    }
    if s.issuer_schema_ids:
        out["issuer_schema_ids"] = sorted(s.issuer_schema_ids)
    if not sign:
        out["rp_context_from"] = ENDPOINT
    return out


def offer(s: WorldIdSettings, now: float, v4: bool, challenge: bool = False) -> dict[str, Any]:
    """The ``prove`` way-out parameters (``challenge``) and the answer to ``GET`` on the
    endpoint (which always signs a fresh rp_context)."""
    action = current_action(s, now)
    out: dict[str, Any] = {
        "method": "worldid",
        "app_id": s.app_id,
        "action": action,
        "endpoint": ENDPOINT,
        "class": "human",
        "signal": s.signal,
        "rotate": s.rotate,
        "protocol_versions": (["3.0"] if s.legacy else []) + (["4.0"] if v4 else []),
        "body": {"result": "<IDKit result>", "signal": "<the signal proved>"},
    }
    if s.period:
        out["action_expires"] = int((now // s.period + 1) * s.period)
    if s.verification_levels:
        out["verification_levels"] = sorted(s.verification_levels)
    sign = not challenge or s.rp is None or s.rp.in_challenge
    request = idkit4_request(s, now, action, sign)
    if request is not None:
        out["idkit"] = request
    return out
