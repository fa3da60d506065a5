"""Puzzles on requests: the ``PoP-Puzzle`` evidence scheme, the 402 way out,
``POST /.well-known/popgate/puzzle`` (solution → short session) and the
browser worker script.

A solution presented with a request (``PoP-Puzzle: <challenge>:<nonces>`` or
``Authorization: PoP-Puzzle <same>``) is checked statelessly here (MAC,
expiry, network, work: one HMAC and one hash); the policy stage then checks
the route scope and bits, and spends it once in the store only if it is what
lets the request through (:class:`WorkProof`). Posted to the endpoint, a
solution is spent at once and buys a session bound to the client's /24 or
/64 with a request budget, returned as a cookie and as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest
from popgate.gateway.http.bodies import read_bounded
from popgate.gateway.ops.config import PuzzleConfig
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.pipeline.challenge_cache import Windowed
from popgate.gateway.pipeline.challenge_page import STATIC, safe_return_path
from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import problem, wants_html
from popgate.gateway.stores.base import Spend, spend
from popgate.gateway.stores.failure import GuardedClaims
from popgate.policies.classify import classify
from popgate.policies.difficulty import Difficulty
from popgate.verifiers import puzzle
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.session import InvalidSession, Session, SessionCodec, keyed_subject

log = logging.getLogger("popgate.puzzle")
SUBMIT = "/.well-known/popgate/puzzle"
WORKER = "/.well-known/popgate/static/challenge-worker.js"
MAX_BODY = 8192


@dataclass(frozen=True, slots=True)
class WorkProof:
    """Work presented with one request, checked but not yet spent.

    ``scope`` is the puzzle's route scope or the stamp's resource; the
    policy stage compares it and ``bits`` with the route, then claims
    ``spend`` (what the verifier returned: ``puzzle.spend_of``, the stamp's
    ``spend``).
    """

    kind: str
    scope: str
    bits: int
    spend: Spend


class PuzzleScheme:
    """``PoP-Puzzle`` evidence: stateless check in Verify, spend in Enforce."""

    name = "puzzle"

    def __init__(self, keys: puzzle.PuzzleKeys) -> None:
        self.keys = keys

    def extract(self, request: web.BaseRequest) -> str | None:
        headers = request.headers
        value = headers.get("PoP-Puzzle")
        if value is not None:
            return value
        auth = headers.get("Authorization")
        if auth is not None and auth[:11].lower() == "pop-puzzle ":
            return auth[11:].strip()
        return None

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        wire, nonces = puzzle.parse_solution(str(evidence))
        c = puzzle.check(self.keys, wire, nonces, now=ctx.now, network=ctx.network)
        proof = WorkProof("puzzle", c.scope, c.bits, puzzle.spend_of(c, ctx.now))
        return Attestation("unknown", "", "puzzle", extra=proof)


class PuzzleOffer:
    """Issues the ``puzzle`` way out of a 402 at the current difficulty."""

    def __init__(
        self,
        keys: puzzle.PuzzleKeys,
        settings: PuzzleConfig,
        difficulty: Difficulty,
        metrics: Metrics,
        window: float = 0.0,
        share_rate: float = 0.0,
    ) -> None:
        self.keys = keys
        # one challenge per (network, scope, bits) and window (gateway/pipeline/challenge_cache.py)
        self.minted: Windowed[puzzle.Challenge] | None = Windowed(window) if window > 0 else None
        self.share_rate = share_rate  # only a network this busy (requests/s) shares its puzzle
        self.settings = settings
        self.difficulty = difficulty
        self.gauge = metrics.difficulty
        self._children: dict[str, Any] = {}

    def bits(self, ctx: Context, floor: int) -> int:
        return self.difficulty.bits(ctx.klass, ctx.network, ctx.now, max(floor, self.settings.bits))

    def offer(self, ctx: Context, scope: str, floor: int) -> WayOut:
        bits = self.bits(ctx, floor)
        minted = self.minted if self.shared(ctx) else None
        key = (ctx.network, scope, bits, minted.epoch(ctx.network) if minted is not None else 0)
        c = minted.get(key, ctx.now) if minted is not None else None
        if c is None:
            c = self._issue(ctx, scope, bits)
            if minted is not None:
                minted.put(key, c)
        child = self._children.get(scope)
        if child is None:  # scope = a policy route name: a bounded label set
            child = self._children[scope] = self.gauge.labels(scope)
        child.set(bits)
        auth = f'PoP-Puzzle challenge="{c.wire}", bits={bits}, subs={c.subs}, expires={c.expires}'
        return WayOut("puzzle", puzzle.way_out(c, SUBMIT), (("WWW-Authenticate", auth),))

    def shared(self, ctx: Context) -> bool:
        """Does ``ctx``'s network send enough to get the window's shared puzzle?"""
        return self.minted is not None and self.difficulty.rate(ctx.network, ctx.now) >= self.share_rate

    def epoch(self, network: str) -> int:
        """The network's epoch in the mint cache (a key part of reused 402s too)."""
        return self.minted.epoch(network) if self.minted is not None else 0

    def spent(self, network: str) -> None:
        """A puzzle of ``network`` was spent (or found spent) here: mint a fresh one next."""
        if self.minted is not None:
            self.minted.bump(network)

    def _issue(self, ctx: Context, scope: str, bits: int) -> puzzle.Challenge:
        return puzzle.issue(
            self.keys,
            network=ctx.network,
            scope=scope,
            bits=bits,
            now=ctx.now,
            ttl=self.settings.ttl,
            subs=self.settings.subs,
            trusted_network=True,
        )


def network_binder(expected_prefix: str = "net:") -> Callable[[Context, Session], Awaitable[None]]:
    """Session binder ``net:<prefix>``: the session only works from that /24 or /64."""

    async def bind(ctx: Context, session: Session) -> None:
        if session.binding != expected_prefix + ctx.network:
            raise InvalidSession(reason="session_wrong_network", detail=str(session.binding))

    return bind


class PuzzleEndpoint:
    """``POST /.well-known/popgate/puzzle`` with ``{"solution", "return_to"}``.

    Spends the challenge once (across every gateway sharing the store) and
    answers 200 JSON ``{token, token_type, expires, budget, redirect}`` with
    the session cookie; a plain HTML form post gets 303 to ``return_to``.
    Rejected solutions get 403 problem+json with the verifier's reason.
    """

    def __init__(
        self,
        keys: puzzle.PuzzleKeys,
        settings: PuzzleConfig,
        store: GuardedClaims,
        sessions: SessionCodec,
        subject_key: bytes,
        cookie: str,
        secure: bool,
        metrics: Metrics,
        on_spend: Callable[[str], None] | None = None,
    ) -> None:
        self.keys, self.settings, self.store = keys, settings, store
        self.on_spend = on_spend  # PuzzleOffer.spent: the network's next 402 gets a fresh puzzle
        self.sessions, self.subject_key = sessions, subject_key
        self.cookie, self.secure, self.metrics = cookie, secure, metrics

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method != "POST":
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "POST"}
            )
        solution, return_to = await self._read(request)
        try:
            att = puzzle.verify(self.keys, solution, now=ctx.now, network=ctx.network)
            try:
                await spend(self.store, att.spend)
            finally:
                if self.on_spend is not None:
                    self.on_spend(ctx.network)
        except VerificationError as exc:
            log.info("puzzle solution rejected: %s (%s)", exc.reason, exc.detail)
            self.metrics.evidence.labels("puzzle", exc.reason).inc()
            return problem(request, 403, exc.reason, "Puzzle solution rejected")
        self.metrics.evidence.labels("puzzle", "ok").inc()
        headers = request.headers
        klass = classify((), headers.get("User-Agent", ""), headers).klass
        s = self.settings
        token = self.sessions.issue(
            klass=klass,
            subject=keyed_subject(self.subject_key, "puzzle", solution),
            now=ctx.now,
            ttl=s.session_ttl,
            evidence="puzzle",
            binding=f"net:{att.network}",
            budget=s.session_budget or None,
            work=att.bits,
        )
        self.metrics.sessions_issued.labels(klass, "puzzle").inc()
        body = {
            "token": token,
            "token_type": "PoP",
            "class": klass,
            "expires": int(ctx.now) + s.session_ttl,
            "budget": s.session_budget or None,
            "redirect": return_to,
        }
        if wants_html(request) and "application/json" not in headers.get("Accept", ""):
            resp: web.Response = web.Response(
                status=303, headers={"Location": return_to, "Cache-Control": "no-store"}
            )
        else:
            resp = web.Response(
                body=json.dumps(body).encode(),
                content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        resp.set_cookie(
            self.cookie,
            token,
            path="/",
            max_age=s.session_ttl,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
        )
        return resp

    async def _read(self, request: web.BaseRequest) -> tuple[str, str]:
        raw = await read_bounded(request, MAX_BODY, "puzzle")
        ctype = request.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/x-www-form-urlencoded"):
                from urllib.parse import parse_qs

                form = {k: v[0] for k, v in parse_qs(raw.decode("ascii")).items()}
                data: Any = form
            else:
                data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest("puzzle body", public='Expected JSON {"solution", "return_to"}.') from None
        if not isinstance(data, dict) or not isinstance(data.get("solution"), str):
            raise BadRequest("puzzle body", public='Expected JSON {"solution", "return_to"}.')
        return_to = data.get("return_to", "/")
        return data["solution"], safe_return_path(return_to if isinstance(return_to, str) else "/")


_WORKER_JS: bytes | None = None


async def worker_script(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
    """``GET /.well-known/popgate/static/challenge-worker.js``."""
    global _WORKER_JS
    if request.method not in ("GET", "HEAD"):
        return problem(
            request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET, HEAD"}
        )
    if _WORKER_JS is None:
        _WORKER_JS = (STATIC / "challenge-worker.js").read_bytes()
    return web.Response(
        body=_WORKER_JS,
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
