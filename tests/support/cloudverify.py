"""A local stand-in for the developer portal's ``POST /api/v4/verify/{rp_id}``.

It really checks the proof: the World ID 4.0 nullifier circuit's 15 public
inputs are rebuilt from the posted IDKit 4.x result (nullifier, issuer schema,
expiry, Merkle root = ``proof[4]``, signal hash, nonce) and from what the
chain would hold (issuer and OPRF keys, rp id, the action's field element,
tree depth), and the compressed Groth16 proof ``proof[0..3]`` is verified with
popgate's own verifier under the fixture's key
(``tests/fixtures/groth16/worldid_protocol_nullifier_compressed.json``).
Like the real API (since PR #1862) it does not refuse a reused nullifier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.groth16 import parse_proof, prepared_key, verify

FIXTURE = json.loads(
    (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "groth16"
        / "worldid_protocol_nullifier_compressed.json"
    ).read_text()
)
ACTION = "popgate-test-action"  # the stub's registry maps this action name to public[9]


def fixture_result() -> dict[str, Any]:
    """The fixture's proof as an IDKit 4.x result with one v4 item."""
    pub = FIXTURE["public"]
    return {
        "protocol_version": "4.0",
        "nonce": pub[13],
        "action": ACTION,
        "environment": "staging",
        "responses": [
            {
                "identifier": "proof_of_human",
                "signal_hash": pub[12],
                "proof": [*FIXTURE["compressed"], pub[6]],
                "nullifier": pub[0],
                "issuer_schema_id": int(pub[1], 16),
                "expires_at_min": int(pub[4], 16),
            }
        ],
    }


def make_app(seen: list[dict[str, Any]] | None = None) -> web.Application:
    key = prepared_key(FIXTURE["vk"])
    chain = [int(x, 16) for x in FIXTURE["public"]]

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        if seen is not None:
            seen.append(body)
        try:
            item = next(i for i in body["responses"] if isinstance(i.get("proof"), list))
            if body.get("action") != ACTION:
                raise VerificationError("invalid_action", "unknown action")
            public = list(chain)
            public[0] = int(str(item["nullifier"]), 16)
            public[1] = int(item["issuer_schema_id"])
            public[4] = int(item["expires_at_min"])
            public[6] = int(str(item["proof"][4]), 16)
            public[12] = int(str(item.get("signal_hash", "0x0")), 16)
            public[13] = int(str(body["nonce"]), 16)
            verify(key, parse_proof(list(item["proof"][:4])), public)
        except (KeyError, StopIteration, ValueError, TypeError):
            return web.json_response({"code": "invalid_request", "detail": "bad body"}, status=400)
        except VerificationError as exc:
            return web.json_response(
                {
                    "code": "all_verifications_failed",
                    "detail": exc.reason,
                    "results": [{"success": False, "code": exc.reason}],
                },
                status=400,
            )
        return web.json_response(
            {
                "success": True,
                "action": body["action"],
                "nullifier": item["nullifier"],
                "environment": "staging",
                "results": [{"identifier": item["identifier"], "success": True}],
                "message": "ok",
            }
        )

    app = web.Application()
    app.router.add_post("/api/v4/verify/{rp_id}", handle)
    return app
