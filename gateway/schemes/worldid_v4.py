"""World ID 4.0 results, verified by a cloud endpoint (the developer portal's
``POST /api/v4/verify/{rp_id}`` or anything speaking it).

popgate posts the IDKit 4.x result as-is and accepts it only on ``200`` with
``"success": true``; the nullifier it spends is the v4 item's, in canonical
form (the API no longer enforces one-time use, so popgate must).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from popgate.gateway.errors import Overloaded
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.worldid import canonical_nullifier

V4_PROTOCOL = "4.0"


def v4_item(result: dict[str, Any]) -> dict[str, Any] | None:
    """The first World ID 4.0 response item (``proof`` a list of 5), or None."""
    items = result.get("responses")
    if not isinstance(items, list):
        return None
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("proof"), list) and len(item["proof"]) == 5:
            return item
    return None


class CloudVerifier:
    """Checks a 4.0 result with ``POST url`` (JSON); returns the canonical nullifier."""

    def __init__(self, url: str, timeout: float, services: Any) -> None:
        self.url, self.timeout, self.services = url, timeout, services

    async def verify(self, result: dict[str, Any]) -> str:
        """Raise Malformed, VerificationError (``invalid_proof``) or Overloaded
        (``verifier_unavailable``, the endpoint could not answer)."""
        item = v4_item(result)
        if item is None or "nullifier" not in item:
            raise Malformed(detail="4.0 result without a nullifier item")
        nullifier = canonical_nullifier(item["nullifier"])
        http = await self.services.outbound()
        try:
            async with http.post(
                self.url,
                json=result,
                headers={"User-Agent": "popgate"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                status = resp.status
                body = await resp.json(content_type=None) if status < 500 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Overloaded(f"cloud verify: {exc!r}", reason="verifier_unavailable", retry_after=5) from None
        if status >= 500 or not isinstance(body, dict):
            raise Overloaded(f"cloud verify: HTTP {status}", reason="verifier_unavailable", retry_after=5)
        if status != 200 or body.get("success") is not True:
            raise VerificationError("invalid_proof", f"cloud: {str(body.get('code'))[:64]}")
        said = body.get("nullifier")
        if said is not None and canonical_nullifier(said) != nullifier:
            raise VerificationError("invalid_proof", "cloud answered for another nullifier")
        return nullifier
