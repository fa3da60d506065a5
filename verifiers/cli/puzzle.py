"""``popgate verify puzzle``: check puzzle solutions against configured keys.

Case fields: ``challenge`` (the ``pz1.…`` string), ``solution`` (the nonce,
``n0,n1,…`` for k sub-solutions, or a whole ``<challenge>:<nonces>`` value),
``now`` (unix seconds; defaults to ``env.now``), ``network`` (the client
prefix, e.g. ``203.0.113.0/24``) or ``client_ip``; optional ``scope`` and
``min_bits``. Output: ``network``, ``scope``, ``bits``, ``subs``, ``expires``.

Keys come from ``env.config`` through :func:`keys_from_config`: the config
object's ``puzzle_keys`` (kid → key bytes) and ``puzzle_signing_kid``. With no
config the check fails with reason ``no_keys``. A challenge spent earlier in
the same run (``env.spend``, one store per run) fails with ``replayed``.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers import puzzle
from popgate.verifiers.errors import Malformed, VerificationError


def keys_from_config(config: Any) -> puzzle.PuzzleKeys:
    """PuzzleKeys from ``config.puzzle_keys`` / ``config.puzzle_signing_kid``.

    Raises VerificationError("no_keys") when the config is None or has no keys.
    """
    keys = getattr(config, "puzzle_keys", None) if config is not None else None
    if not keys:
        raise VerificationError("no_keys", "puzzle verification needs --config with puzzle keys")
    kid = getattr(config, "puzzle_signing_kid", None) or next(iter(keys))
    try:
        return puzzle.PuzzleKeys(dict(keys), kid)
    except ValueError as exc:
        raise VerificationError("no_keys", str(exc)) from None


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    keys = keys_from_config(getattr(env, "config", None))
    challenge, solution = case.get("challenge"), case.get("solution")
    if not isinstance(challenge, str) or not isinstance(solution, (str, int)):
        raise Malformed(detail="case needs challenge (string) and solution")
    solution = str(solution)
    value = solution if ":" in solution else f"{challenge}:{solution}"
    network, client_ip = case.get("network"), case.get("client_ip")
    if network is None and client_ip is None:
        raise Malformed(detail="case needs network or client_ip")
    try:
        now = float(case.get("now", env.now))
        min_bits = int(case.get("min_bits", 0))
    except (TypeError, ValueError):
        raise Malformed(detail="now and min_bits must be numbers") from None
    if not value.startswith(challenge + ":"):
        raise VerificationError("wrong_resource", "solution is for another challenge")
    try:
        att = puzzle.verify(
            keys,
            value,
            now=now,
            network=network,
            client_ip=client_ip,
            scope=case.get("scope"),
            min_bits=min_bits,
        )
    except ValueError as exc:  # a bad client_ip / network string
        raise Malformed(detail=str(exc)) from None
    await env.spend(att.spend)
    return {
        "network": att.network,
        "scope": att.scope,
        "bits": att.bits,
        "subs": att.subs,
        "expires": att.expires,
    }
