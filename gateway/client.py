"""Client helper: answer a popgate 402 with work, then retry.

A popgate challenge is ``402 Payment Required`` with
``Content-Type: application/problem+json`` (RFC 9457)::

    {
      "type": "urn:popgate:problem:evidence_required",
      "title": "Evidence required", "status": 402, "reason": "evidence_required",
      "detail": "...",
      "ways_out": [
        {"kind": "puzzle", "algorithm": "sha256-leading-zero-bits",
         "challenge": "pz1.<kid>.<payload>.<mac>", "bits": 16, "subs": 1,
         "expires": 1790000000, "header": "PoP-Puzzle",
         "submit": "/.well-known/popgate/puzzle"},
        {"kind": "hashcash", "version": 1, "resource": "api.example.com/api",
         "bits": 20, "max_age": 3600, "header": "X-Hashcash"},
        {"kind": "prove", ...}, {"kind": "pay", ...}, {"kind": "credits", ...}
      ]
    }

Only ``kind`` is common to every way out; this module reads the ``puzzle``
and ``hashcash`` ones (the puzzle wire format is in ``verifiers/puzzle.py``):

- puzzle (k = subs): nonces ``n_j`` such that SHA-256(challenge ‖ n) (k = 1)
  or SHA-256(challenge ‖ "." ‖ j ‖ "." ‖ n_j) (k > 1) has ``bits`` leading
  zero bits; retry with ``PoP-Puzzle: <challenge>:<n_0>[,<n_1>...]``;
- hashcash: a v1 stamp for ``resource`` with ``bits``; retry with
  ``X-Hashcash: <stamp>``.

This module needs only the standard library; the convenience wrappers take an
``aiohttp.ClientSession`` or a ``requests.Session`` that you pass in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SOLVABLE = ("puzzle", "hashcash")


class CannotSolve(Exception):
    """No way out this client can take (none offered, or too hard)."""


@dataclass(frozen=True, slots=True)
class Solved:
    """Headers for the retry, and what the work cost."""

    way: str
    headers: dict[str, str]
    hashes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hash_rate(self) -> float:
        return self.hashes / self.seconds if self.seconds > 0 else 0.0


def find_nonce(prefix: bytes, bits: int, start: int = 0) -> tuple[int, int]:
    """Smallest n >= start with SHA-256(prefix ‖ str(n)) below the target; (n, tries)."""
    base = hashlib.sha256(prefix)
    limit = 1 << (64 - bits)
    n = start
    while True:
        h = base.copy()
        h.update(b"%d" % n)
        if int.from_bytes(h.digest()[:8], "big") < limit:
            return n, n - start + 1
        n += 1


def solve_puzzle(way: dict[str, Any], max_bits: int = 28) -> Solved:
    """Solve a ``puzzle`` way out. Raises CannotSolve when harder than ``max_bits``."""
    challenge, bits, subs = str(way["challenge"]), int(way["bits"]), int(way.get("subs", 1))
    if bits > max_bits or not 1 <= subs <= 16 or ":" in challenge:
        raise CannotSolve(f"puzzle of {bits} bits x {subs} is beyond this client")
    t0 = time.perf_counter()
    nonces, hashes = [], 0
    for j in range(subs):
        prefix = challenge if subs == 1 else f"{challenge}.{j}."
        n, tries = find_nonce(prefix.encode(), bits)
        nonces.append(str(n))
        hashes += tries
    header = str(way.get("header", "PoP-Puzzle"))
    return Solved(
        "puzzle",
        {header: f"{challenge}:{','.join(nonces)}"},
        hashes,
        time.perf_counter() - t0,
        {"nonces": nonces},
    )


def mint_hashcash(
    resource: str, bits: int, now: float | None = None, max_bits: int = 28, header: str = "X-Hashcash"
) -> Solved:
    """Mint a hashcash v1 stamp (SHA-1, date YYMMDD in UTC) for ``resource``."""
    if bits > max_bits or ":" in resource:
        raise CannotSolve(f"stamp of {bits} bits for {resource!r} is beyond this client")
    t0 = time.perf_counter()
    date = time.strftime("%y%m%d", time.gmtime(time.time() if now is None else now))
    rand = base64.b64encode(os.urandom(12)).decode()
    base = hashlib.sha1(f"1:{bits}:{date}:{resource}::{rand}:".encode())
    limit = 1 << (160 - bits)
    n = 0
    while True:
        h = base.copy()
        h.update(b"%x" % n)
        if int.from_bytes(h.digest(), "big") < limit:
            break
        n += 1
    stamp = f"1:{bits}:{date}:{resource}::{rand}:{n:x}"
    return Solved("hashcash", {header: stamp}, n + 1, time.perf_counter() - t0, {"stamp": stamp})


def ways_out(problem: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``ways_out`` list of a problem body (empty when absent or malformed)."""
    ways = problem.get("ways_out") if isinstance(problem, dict) else None
    if not isinstance(ways, list):
        return []
    # ``kind`` names every way out; older gateways sent ``type``.
    return [
        {**w, "kind": w.get("kind", w.get("type"))}
        for w in ways
        if isinstance(w, dict) and ("kind" in w or "type" in w)
    ]


def respond(
    problem: dict[str, Any] | str | bytes,
    prefer: Iterable[str] = SOLVABLE,
    max_bits: int = 28,
    now: float | None = None,
) -> Solved:
    """Pick the first way out in ``prefer`` order that is offered and solve it.

    Raises CannotSolve when none of them is offered (or all are too hard).
    """
    if isinstance(problem, (str, bytes)):
        problem = json.loads(problem)
    if not isinstance(problem, dict):
        raise CannotSolve("not a problem+json object")
    offered = {w["kind"]: w for w in ways_out(problem)}
    last: Exception | None = None
    for kind in prefer:
        way = offered.get(kind)
        try:
            if kind == "puzzle" and way is not None:
                return solve_puzzle(way, max_bits)
            if kind == "hashcash" and way is not None:
                return mint_hashcash(
                    str(way["resource"]),
                    int(way["bits"]),
                    now,
                    max_bits,
                    str(way.get("header", "X-Hashcash")),
                )
        except (CannotSolve, KeyError, ValueError, TypeError) as exc:
            last = exc
    raise CannotSolve(f"no solvable way out among {sorted(offered)}: {last or 'none offered'}")


def _is_challenge(status: int, content_type: str) -> bool:
    return status == 402 and content_type.split(";")[0].strip() == "application/problem+json"


async def aiohttp_request(session: Any, method: str, url: str, *, max_bits: int = 28, **kwargs: Any) -> Any:
    """``session.request`` that, on a popgate 402, solves and retries once.
    Returns the final ``aiohttp.ClientResponse`` (its ``solved`` attribute is
    set when work was done)."""
    resp = await session.request(method, url, **kwargs)
    if not _is_challenge(resp.status, resp.headers.get("Content-Type", "")):
        return resp
    solved = respond(await resp.json(content_type=None), max_bits=max_bits)
    resp.release()
    headers = {**dict(kwargs.pop("headers", None) or {}), **solved.headers}
    retry = await session.request(method, url, headers=headers, **kwargs)
    retry.solved = solved
    return retry


def requests_request(session: Any, method: str, url: str, *, max_bits: int = 28, **kwargs: Any) -> Any:
    """The same for a ``requests.Session``."""
    resp = session.request(method, url, **kwargs)
    if not _is_challenge(resp.status_code, resp.headers.get("Content-Type", "")):
        return resp
    solved = respond(resp.json(), max_bits=max_bits)
    headers = {**dict(kwargs.pop("headers", None) or {}), **solved.headers}
    retry = session.request(method, url, headers=headers, **kwargs)
    retry.solved = solved
    return retry
