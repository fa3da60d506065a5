"""The policy engine (:mod:`policies`) as the pipeline's Decide stage.

:class:`PolicyStage` replaces the core's one-action-per-class policy. Per
request it classifies clients without evidence (declared bot UAs → ``agent``,
heuristic weight for missing browser headers), asks the compiled policy for
the action on this route, and answers:

- ``allow`` → continue; ``deny`` → 403 (or the rule's 4xx);
- ``challenge`` → 402 listing the ways out the rule accepts (``ways``), each
  from the registered way-out providers (World ID, zkLogin, x402, credits:
  filtered by kind) plus the puzzle and the hashcash stamp issued here at the
  current adaptive difficulty; work already presented for this route
  (a puzzle solution or stamp of enough bits, or a session bought with a
  puzzle of at least the route's floor bits) satisfies it;
- ``charge`` → a :class:`~gateway.pipeline.decisions.Charge` for the payment enforcers;
- ``throttle`` → a GCRA step in the store per subject or per network.

The matched :class:`policies.model.Match` is left in
``ctx.evidence["policy"]`` for way-out providers that need the route or price.

Without ``[policy] file`` the engine is not used: the ``[policy]`` per-class
actions apply as in the core (no heuristics), and a challenge offers every way.
:meth:`PolicyStage.reload` (SIGHUP) recompiles the file and swaps it in with
one assignment; an invalid file is logged and the old policy kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from popgate.gateway.errors import GatewayError
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Challenge, Charge, Decision, Deny, Throttle, WayOut
from popgate.gateway.pipeline.pressure import PressureMonitor
from popgate.gateway.schemes import hashcash as hashcash_ev
from popgate.gateway.schemes.puzzle import PuzzleOffer, WorkProof
from popgate.gateway.stores.base import Store, key
from popgate.gateway.stores.failure import FailurePolicy, GuardedClaims
from popgate.policies.classify import bot_token, classify
from popgate.policies.difficulty import Difficulty
from popgate.policies.holder import PolicyHolder
from popgate.policies.loader import PolicyError
from popgate.policies.model import ALLOW, WAYS, Action, Match, RequestView

log = logging.getLogger("popgate.policy")
POLICY_KEY = "policy"
_PENDING = "policy.pending"
ALL_WAYS = WAYS
# Kinds providers may use, mapped onto the policy's ways.
_KIND_WAY = {"worldid": "prove", "zklogin": "prove", "oidc": "prove", "x402": "pay"}


class PolicyDenied(GatewayError):
    """A deny rule with a status other than 403 (e.g. 404 for probes)."""

    reason, title = "denied", "Not found"

    def __init__(self, status: int) -> None:
        super().__init__(f"policy deny {status}", public="")
        self.status = status
        self.title = "Not found" if status == 404 else "Forbidden"


class PolicyStage:
    """``decide(ctx)`` for :class:`gateway.pipeline.stages.Decide`; see module doc."""

    def __init__(
        self,
        *,
        holder: PolicyHolder | None,
        class_actions: dict[str, str],
        providers: list[Callable[[Context], WayOut | None]],
        difficulty: Difficulty,
        puzzles: PuzzleOffer | None,
        hashcash_max_age: float | None,
        default_bits: int,
        store: Store,
        failure: FailurePolicy,
        monitor: PressureMonitor,
    ) -> None:
        self.holder = holder
        self.class_actions = {k: _core_action(v) for k, v in class_actions.items()}
        self.providers = providers  # the gateway's list: colleagues append to it
        self.difficulty = difficulty
        self.puzzles = puzzles
        self.hashcash_max_age = hashcash_max_age
        self.default_bits = default_bits
        self.store = store
        self.failure = failure
        self.monitor = monitor
        self._sample = 0
        # Set by the fee rails: does a request carry a payment they would take?
        self.payment_present: Callable[[Any], bool] | None = None

    # -- reload ---------------------------------------------------------
    def reload(self) -> bool:
        """Recompile the policy file; keep the old policy when it is invalid."""
        if self.holder is None:
            log.info("SIGHUP: no [policy] file configured, nothing to reload")
            return False
        try:
            self.holder.reload()
        except (PolicyError, OSError) as exc:
            log.error("policy reload failed, keeping the current policy: %s", exc)
            return False
        log.warning("policy reloaded from %s", self.holder.path)
        return True

    # -- decide ---------------------------------------------------------
    def match(self, ctx: Context) -> Match:
        if self.holder is None:
            return self.class_actions.get(ctx.klass) or self.class_actions["unknown"]
        req = ctx.request
        headers = req.headers
        ua = headers.get("User-Agent", "")
        weight = 0
        if ctx.klass == "unknown" and not _has_class(ctx):
            c = classify((), ua, headers)
            ctx.klass, weight = c.klass, c.weight
        declared = bot_token(ua) if ctx.klass == "agent" else None
        path, _, query = req.raw_path.partition("?")
        view = RequestView(req.host, req.method, path, query, headers, ua, ctx.client_ip, declared)
        return self.holder.current.match(view, ctx.klass, weight)

    def decide(self, ctx: Context) -> Decision | None:
        if self.monitor.task is None:
            self.monitor.ensure_started()
        m = self.match(ctx)
        ctx.rule = m.rule
        action = m.action
        kind = action.kind
        if kind == "allow":
            return None
        if ctx.klass in ("agent", "unknown"):
            self.difficulty.observe(ctx.network, ctx.now)
        ctx.evidence[POLICY_KEY] = m
        if kind == "challenge":
            if self._satisfied(ctx, action, m.route):
                return None
            if (
                action.price
                and self.payment_present is not None
                and ("pay" in action.ways or "credits" in action.ways)
                and self.payment_present(ctx.request.headers)
            ):
                # A paying client takes the "pay" way out: charge the route's price.
                return Charge(price=action.price, ways_out=self.ways_out(ctx, action, m.route), route=m.route)
            reason = ctx.rejections[0] if ctx.rejections else "evidence_required"
            return Challenge(reason=reason, ways_out=self.ways_out(ctx, action, m.route))
        if kind == "charge":
            if ctx.charged >= action.price:
                return None
            return Charge(price=action.price, ways_out=self.ways_out(ctx, action, m.route), route=m.route)
        if kind == "throttle":
            ctx.evidence[_PENDING] = ("throttle", m)
            return None
        if action.status in (0, 403):
            return Deny()
        raise PolicyDenied(action.status)

    def _satisfied(self, ctx: Context, action: Action, route: str) -> bool:
        ways = action.ways
        for a in ctx.attestations:
            proof = a.extra
            if isinstance(proof, WorkProof):
                if proof.kind not in ways:
                    continue
                if proof.kind == "puzzle":
                    ok = proof.scope == route and proof.bits >= self._floor(ctx, action)
                else:
                    ok = proof.scope == hashcash_ev.resource_for(ctx, route) and proof.bits >= self._bits(
                        ctx, action
                    )
                if ok:
                    ctx.evidence[_PENDING] = ("spend", proof, action, route)
                    ctx.evidence_kind = proof.kind
                    return True
            elif (
                a.session is not None
                and a.evidence in ("puzzle", "hashcash")
                and ("puzzle" in ways or "hashcash" in ways)
                and a.session.work >= self._floor(ctx, action)
            ):
                return True  # a session bought with enough work (budgeted, network-bound)
        return bool(action.price) and ("pay" in ways or "credits" in ways) and ctx.charged >= action.price

    def _floor(self, ctx: Context, action: Action) -> int:
        floor = max(action.min_bits, self.default_bits)
        return max(floor, self.difficulty.config.class_floor.get(ctx.klass, 0))

    def _bits(self, ctx: Context, action: Action) -> int:
        return self.difficulty.bits(ctx.klass, ctx.network, ctx.now, max(action.min_bits, self.default_bits))

    def ways_out(self, ctx: Context, action: Action, route: str) -> tuple[WayOut, ...]:
        """Every accepted way out, in the order the rule lists them."""
        offered: dict[str, list[WayOut]] = {}
        for provider in self.providers:
            w = provider(ctx)
            if w is not None:
                offered.setdefault(_KIND_WAY.get(w.kind, w.kind), []).append(w)
        out: list[WayOut] = []
        for way in action.ways:
            if way == "puzzle" and self.puzzles is not None:
                out.append(self.puzzles.offer(ctx, route, action.min_bits))
            elif way == "hashcash" and self.hashcash_max_age is not None:
                out.append(hashcash_ev.offer(ctx, route, self._bits(ctx, action), self.hashcash_max_age))
            out.extend(offered.get(way, ()))
        return tuple(out)

    # -- enforce ----------------------------------------------------------
    async def enforce(self, ctx: Context) -> Decision | None:
        """Spend presented work once; take a GCRA step for throttled routes;
        sample upstream latency for the pressure signal."""
        pending = ctx.evidence.get(_PENDING) if ctx.evidence else None
        if pending is not None:
            if pending[0] == "spend":
                _, proof, action, route = pending
                item = proof.spend
                won = await self.failure.guard(
                    "spend", self.store.claim(item.key, item.ttl, item.limit), True
                )
                if not won:
                    ctx.evidence_kind = ""
                    return Challenge(reason="replayed", ways_out=self.ways_out(ctx, action, route))
            else:
                m: Match = pending[1]
                rate = m.action.rate
                if rate is not None:
                    who = f"s:{ctx.subject}" if rate.per == "subject" and ctx.subject else f"n:{ctx.network}"
                    allowed, retry = await self.failure.guard(
                        "rate_limit",
                        self.store.gcra(key("gcra", f"{m.route}:{who}"), rate.interval, rate.burst),
                        (True, 0.0),
                    )
                    if not allowed:
                        return Throttle(retry_after=retry)
        self._sample += 1
        if self._sample & 7 == 0:
            t0 = time.perf_counter()
            observe = self.monitor.observe_upstream
            ctx.after_response.append(lambda _resp: observe(time.perf_counter() - t0))
        return None


def _has_class(ctx: Context) -> bool:
    return any(a.extra is None or not isinstance(a.extra, WorkProof) for a in ctx.attestations)


def _core_action(name: str) -> Match:
    if name == "allow":
        return Match(ALLOW, "default", "default")
    if name == "deny":
        return Match(Action("deny", status=403), "default", "default")
    return Match(Action("challenge", ways=ALL_WAYS), "default", "default")


def policy_extension(gateway, services) -> None:  # type: ignore[no-untyped-def]
    """Wire policy engine, puzzles, hashcash, difficulty and pressure into ``gateway``.

    Reads ``[policy] file``, ``[puzzle]`` and ``[difficulty]``. Raises
    ConfigError (every problem listed) when the policy file is invalid.
    """
    from popgate.gateway.ops.config import ConfigError
    from popgate.gateway.pipeline.challenge_page import html_challenge
    from popgate.gateway.pipeline.pressure import difficulty_config
    from popgate.gateway.schemes.hashcash import HashcashScheme
    from popgate.gateway.schemes.puzzle import (
        SUBMIT,
        WORKER,
        PuzzleEndpoint,
        PuzzleScheme,
        network_binder,
        worker_script,
    )
    from popgate.policies.loader import load
    from popgate.verifiers.puzzle import PuzzleKeys

    config = services.config
    difficulty = Difficulty(difficulty_config(config.raw.get("difficulty")))
    monitor = PressureMonitor(difficulty, services.metrics)
    services.cleanups.append(monitor.close)
    holder = None
    if config.policy.file:
        try:
            holder = PolicyHolder(load(config.policy.file), config.policy.file)
        except PolicyError as exc:
            raise ConfigError([f"policy.file: {p}" for p in exc.problems]) from None
    puzzles, max_age, bits = None, None, 16
    pz = config.puzzle
    if pz is not None:
        keys = PuzzleKeys(pz.keys, pz.signing_kid)
        bits = pz.bits
        puzzles = PuzzleOffer(keys, pz, difficulty, services.metrics)
        gateway.schemes.append(PuzzleScheme(keys))
        gateway.endpoints[SUBMIT] = PuzzleEndpoint(
            keys,
            pz,
            GuardedClaims(services.store, services.failure, "spend"),
            services.sessions,
            services.subject_key,
            config.sessions.cookie_name,
            config.sessions.cookie_secure,
            services.metrics,
        )
        if pz.hashcash:
            max_age = float(pz.hashcash_max_age)
            gateway.schemes.append(HashcashScheme(max_age))
    gateway.session_scheme.binders["net"] = network_binder()
    gateway.endpoints[WORKER] = worker_script
    stage = PolicyStage(
        holder=holder,
        class_actions=config.policy.actions,
        providers=gateway.way_out_providers,
        difficulty=difficulty,
        puzzles=puzzles,
        hashcash_max_age=max_age,
        default_bits=bits,
        store=services.store,
        failure=services.failure,
        monitor=monitor,
    )
    gateway.policy.policy = stage
    gateway.enforcers.append(stage.enforce)
    gateway.html_challenge = html_challenge
    gateway.reload = stage.reload
    gateway.policy_stage = stage
