"""``popgate verify hashcash``: check hashcash v1 stamps.

Case fields: ``stamp`` (required), ``resource`` (required), ``now`` (unix
seconds; defaults to ``env.now``), ``min_bits`` (default 20),
``max_age_seconds`` (default 28 days), ``skew_seconds`` (default 300).
Output on success: ``bits`` (zero bits found), ``resource``, ``date`` (unix
seconds of the stamp's date). A stamp spent earlier in the same run
(``env.spend``, one store per run) fails with ``replayed``.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers import hashcash
from popgate.verifiers.errors import Malformed


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    stamp, resource = case.get("stamp"), case.get("resource")
    if not isinstance(stamp, str) or not isinstance(resource, str):
        raise Malformed(detail="case needs string fields stamp and resource")
    try:
        now = float(case.get("now", env.now))
        min_bits = int(case.get("min_bits", 20))
        max_age = float(case.get("max_age_seconds", hashcash.DEFAULT_MAX_AGE))
        skew = float(case.get("skew_seconds", hashcash.DEFAULT_SKEW))
    except (TypeError, ValueError):
        raise Malformed(detail="now, min_bits, max_age_seconds, skew_seconds must be numbers") from None
    att = hashcash.check(stamp, resource=resource, now=now, min_bits=min_bits, max_age=max_age, skew=skew)
    await env.spend(att.spend)
    return {"bits": att.bits, "resource": att.resource, "date": att.timestamp}
