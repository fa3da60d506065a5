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

The matched :class:`policies.model.Match` is left in ``ctx.match`` (and its
route in ``ctx.route``); way-out providers are called with it.

Without ``[policy] file`` the engine is not used: the ``[policy]`` per-class
actions apply as in the core (no heuristics), and a challenge offers every way.
:meth:`PolicyStage.reload` (SIGHUP) recompiles the file and swaps it in with
one assignment; an invalid file is logged and the old policy kept.

:func:`policy_extension` registers all of this (with the puzzle and hashcash
schemes, the puzzle endpoints and the pressure monitor as a background task)
from the already-validated ``[policy]``, ``[puzzle]`` and ``[difficulty]`` settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from popgate.gateway.errors import GatewayError
from popgate.gateway.ops.deadends import dead_ends, with_policy
from popgate.gateway.pipeline.challenge_cache import Windowed
from popgate.gateway.pipeline.context import Context, Pending
from popgate.gateway.pipeline.decisions import Challenge, Charge, Decision, Deny, Throttle, WayOut
from popgate.gateway.pipeline.pressure import PressureMonitor
from popgate.gateway.pipeline.responses import HtmlChallenge, render_challenge, wants_html
from popgate.gateway.registry import PaymentProbe, Registry, Services, WayOutProvider
from popgate.gateway.schemes import hashcash as hashcash_ev
from popgate.gateway.schemes.hashcash import HashcashScheme
from popgate.gateway.schemes.puzzle import (
    SUBMIT,
    WORKER,
    PuzzleEndpoint,
    PuzzleOffer,
    PuzzleScheme,
    WorkProof,
    network_binder,
    worker_script,
)
from popgate.gateway.stores.base import Store, key
from popgate.gateway.stores.failure import FailurePolicy, GuardedClaims
from popgate.policies.classify import bot_token, classify
from popgate.policies.difficulty import Difficulty
from popgate.policies.engine import Policy
from popgate.policies.holder import PolicyHolder
from popgate.policies.loader import PolicyError
from popgate.policies.model import ALLOW, WAYS, Action, Match, RequestView, Trace
from popgate.verifiers.puzzle import PuzzleKeys

log = logging.getLogger("popgate.policy")
ALL_WAYS = WAYS
# Kinds providers may use, mapped onto the policy's ways.
_KIND_WAY = {
    "worldid": "prove",
    "zklogin": "prove",
    "oidc": "prove",
    "signin": "prove",
    "privatepass": "prove",
    "x402": "pay",
}


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
        providers: list[WayOutProvider],
        difficulty: Difficulty,
        puzzles: PuzzleOffer | None,
        hashcash_max_age: float | None,
        default_bits: int,
        store: Store,
        failure: FailurePolicy,
        monitor: PressureMonitor,
        payment_present: PaymentProbe | None = None,
        challenge_window: float = 0.0,
        share_rate: float = 0.0,
        page: Callable[[], HtmlChallenge | None] = lambda: None,
    ) -> None:
        self.holder = holder
        self.class_actions = {k: _core_action(v) for k, v in class_actions.items()}
        self.providers = providers  # the registry's list: colleagues append to it
        self.difficulty = difficulty
        self.puzzles = puzzles
        self.hashcash_max_age = hashcash_max_age
        self.default_bits = default_bits
        self.store = store
        self.failure = failure
        self.monitor = monitor
        self._sample = 0
        # Asks the fee rails: does a request carry a payment they would take?
        self.payment_present = payment_present
        # 402s reused within a window (gateway/pipeline/challenge_cache.py); None: rendered per request
        self.rendered: Windowed[Challenge] | None = (
            Windowed(challenge_window) if challenge_window > 0 else None
        )
        self.share_rate = share_rate  # requests/s from a network before its 402s are reused
        self.page = page  # the registry's html_challenge hook, read when a 402 is rendered here

    # -- reload ---------------------------------------------------------
    def reload(self, vet: Callable[[Policy], Sequence[str]] | None = None) -> bool:
        """Recompile the policy file; keep the old policy when it is invalid or ``vet``
        (the start-up dead-end check) finds problems with it."""
        if self.holder is None:
            log.info("SIGHUP: no [policy] file configured, nothing to reload")
            return False
        try:
            self.holder.reload(vet=vet)
        except (PolicyError, OSError) as exc:
            log.error("policy reload failed, keeping the current policy: %s", exc)
            return False
        log.warning("policy reloaded from %s", self.holder.path)
        return True

    # -- decide ---------------------------------------------------------
    def match(self, ctx: Context, trace: Trace | None = None) -> Match:
        if self.holder is None:
            return self.class_actions.get(ctx.klass) or self.class_actions["unknown"]
        req = ctx.request
        headers = req.headers
        ua = headers.get("User-Agent", "")
        weight = ctx.weight
        if ctx.klass == "unknown" and not _has_class(ctx):
            c = classify((), ua, headers)
            ctx.klass, weight = c.klass, weight + c.weight
        declared = bot_token(ua) if ctx.klass == "agent" else ctx.agent or None
        t = ctx.target  # the host and path the origin will be sent (gateway/http/target.py)
        view = RequestView(t.host, req.method, t.raw_path, t.query, headers, ua, ctx.client_ip, declared)
        if trace is None:
            return self.holder.current.match(view, ctx.klass, weight)
        trace.heuristic = weight
        return self.holder.current.match(view, ctx.klass, weight, trace=trace)

    def target_decides(self, ctx: Context) -> bool:
        """Whether the policy decides this client's class on this request from its
        method, host and path alone (no user agent, header or network rule ran)."""
        if self.holder is None:
            return True
        t, req = ctx.target, ctx.request
        ua = req.headers.get("User-Agent", "")
        view = RequestView(t.host, req.method, t.raw_path, t.query, req.headers, ua, ctx.client_ip)
        return self.holder.current.target_decides(view, ctx.klass)

    def decide(self, ctx: Context, trace: Trace | None = None) -> Decision | None:
        """The decision for ``ctx``; ``trace`` (``popgate explain``) records how it was reached."""
        m = self.match(ctx, trace)
        if trace is not None:
            trace.match = m
        ctx.rule = m.rule
        action = m.action
        kind = action.kind
        if kind == "allow":
            return None
        if ctx.klass in ("agent", "unknown"):
            self.difficulty.observe(ctx.network, ctx.now)
        ctx.match, ctx.route = m, m.route
        if kind == "challenge":
            if self._satisfied(ctx, action, m.route):
                return None
            if (
                action.price
                and self.payment_present is not None
                and ("pay" in action.ways or "credits" in action.ways)
                and self.payment_present(ctx)
            ):
                # A paying client takes the "pay" way out: charge the route's price.
                return Charge(price=action.price, ways_out=self.ways_out(ctx, action, m.route), route=m.route)
            reason = ctx.rejections[0] if ctx.rejections else "evidence_required"
            return self._challenge(ctx, action, m.route, reason)
        if kind == "charge":
            if ctx.charged >= action.price:
                return None
            return Charge(price=action.price, ways_out=self.ways_out(ctx, action, m.route), route=m.route)
        if kind == "throttle":
            ctx.pending = Pending("throttle")
            return None
        if action.status in (0, 403):
            return Deny()
        raise PolicyDenied(action.status)

    def _challenge(self, ctx: Context, action: Action, route: str, reason: str) -> Challenge:
        """The 402, from the window's cache when this key was rendered already."""
        cache = self.rendered
        req = ctx.request
        html = wants_html(req)  # a browser's page follows its language: rendered per request
        if cache is None or html:
            return Challenge(reason=reason, ways_out=self.ways_out(ctx, action, route))
        network, now, d = ctx.network, ctx.now, self.difficulty
        rate = d.rate(network, now)
        if rate < self.share_rate:
            return Challenge(reason=reason, ways_out=self.ways_out(ctx, action, route))
        epoch = self.puzzles.epoch(network) if self.puzzles is not None else 0
        bits = d.bits(ctx.klass, network, now, max(action.min_bits, self.default_bits), rate)
        key = (ctx.klass, network, epoch, route, bits, reason, html, req.host, req.raw_path)
        hit = cache.get(key, now)
        if hit is None:
            fresh = Challenge(reason=reason, ways_out=self.ways_out(ctx, action, route))
            hit = Challenge(reason=reason, rendered=render_challenge(req, fresh, self.page()))
            cache.put(key, hit)
        return hit

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
                    ctx.pending = Pending("spend", proof.spend)
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
        match = ctx.match
        for provider in self.providers:
            w = provider(ctx, match)
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
        pending, m = ctx.pending, ctx.match
        if pending is not None and m is not None:
            if pending.spend is not None:
                item = pending.spend
                won = await self.failure.guard(
                    "spend", self.store.claim(item.key, item.ttl, item.limit), True
                )
                if ctx.evidence_kind == "puzzle" and self.puzzles is not None:
                    self.puzzles.spent(ctx.network)  # the network's next 402: a fresh puzzle
                if not won:
                    ctx.evidence_kind = ""
                    return Challenge(reason="replayed", ways_out=self.ways_out(ctx, m.action, m.route))
            else:
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


def policy_extension(registry: Registry, services: Services) -> None:
    """Register the policy engine, puzzles, hashcash, difficulty and pressure.

    Uses the validated ``[policy] file`` (compiled by the config),
    ``[puzzle]`` and ``[difficulty]`` settings.
    """
    config = services.config
    features = config.features
    difficulty = Difficulty(features.difficulty)
    monitor = PressureMonitor(difficulty, services.metrics)
    registry.background.append(monitor)
    holder = None
    if features.policy is not None and config.policy.file:
        holder = PolicyHolder(features.policy, config.policy.file)
    puzzles, max_age, bits = None, None, 16
    pz = config.puzzle
    if pz is not None:
        keys = PuzzleKeys(pz.keys, pz.signing_kid)
        bits = pz.bits
        ov = config.features.overload
        puzzles = PuzzleOffer(
            keys, pz, difficulty, services.metrics, ov.challenge_window, ov.challenge_min_rate
        )
        registry.schemes.append(PuzzleScheme(keys))
        registry.endpoints[SUBMIT] = PuzzleEndpoint(
            keys,
            pz,
            GuardedClaims(services.store, services.failure, "spend"),
            services.sessions,
            services.subject_key,
            config.sessions.cookie_name,
            config.sessions.cookie_secure,
            services.metrics,
            puzzles.spent,
        )
        if pz.hashcash:
            max_age = float(pz.hashcash_max_age)
            registry.schemes.append(HashcashScheme(max_age))
    registry.session.binders["net"] = network_binder()
    registry.endpoints[WORKER] = worker_script
    stage = PolicyStage(
        holder=holder,
        class_actions=config.policy.actions,
        providers=registry.way_out_providers,
        difficulty=difficulty,
        puzzles=puzzles,
        hashcash_max_age=max_age,
        default_bits=bits,
        store=services.store,
        failure=services.failure,
        monitor=monitor,
        payment_present=registry.carries_payment,
        challenge_window=config.features.overload.challenge_window,
        share_rate=config.features.overload.challenge_min_rate,
        page=lambda: registry.html_challenge,
    )
    registry.policy = stage
    registry.target_decides = stage.target_decides
    registry.enforcers.append(stage.enforce)
    registry.reload_hooks.append(
        lambda: stage.reload(vet=lambda policy: dead_ends(with_policy(config, policy))[0])
    )
