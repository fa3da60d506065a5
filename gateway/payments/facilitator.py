"""HTTP client for an x402 facilitator: ``GET /supported``, ``POST /verify``,
``POST /settle`` (shapes as the official SDK's ``HTTPFacilitatorClient``).

Request body for verify and settle::

    {"x402Version": <payload version>, "paymentPayload": {...},
     "paymentRequirements": {...}}

Responses: ``VerifyResponse`` ``{isValid, invalidReason?, invalidMessage?,
payer?}`` and ``SettleResponse`` ``{success, errorReason?, errorMessage?,
payer?, transaction, network, amount?}``. Unlike the SDK, a non-200 answer
whose body is still a well-formed verify/settle response (the CDP
facilitator answers some rejections with HTTP 400 + ``isValid: false``,
x402 #2110) is read as that response, not as an error.

Transport problems raise :class:`FacilitatorError` with reasons
``facilitator_timeout``, ``facilitator_unavailable`` (connection or 5xx),
``facilitator_bad_response`` (unparseable).

:class:`SettlementQueue` (below) keeps settlements durable on the Store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.x402 import SettleResult
from popgate.verifiers.x402_exact import map_invalid_reason

__all__ = ["map_invalid_reason"]  # re-exported: the reason table lives with the verifier that uses it

if TYPE_CHECKING:
    from popgate.gateway.stores.base import Store

SETTLEMENT_PENDING = "settlement_pending"
NONCE_ALREADY_USED = "invalid_exact_evm_nonce_already_used"
PERMIT2_NONCE_USED = "permit2_invalid_nonce"  # upto: the Permit2 nonce is spent on chain
_T = TypeVar("_T")


class FacilitatorError(VerificationError):
    """The facilitator could not give an answer (not a rejection)."""

    reason = "facilitator_unavailable"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    is_valid: bool
    payer: str | None = None
    invalid_reason: str | None = None
    invalid_message: str | None = None
    extra: Mapping[str, Any] | None = None  # batch-settlement: the channel snapshot

    @classmethod
    def from_json(cls, obj: Any) -> VerifyResult:
        if not isinstance(obj, dict) or not isinstance(obj.get("isValid"), bool):
            raise Malformed(detail="verify response lacks isValid")

        def s(k: str) -> str | None:
            v = obj.get(k)
            return v if isinstance(v, str) else None

        extra = obj.get("extra")
        extra = extra if isinstance(extra, dict) else None
        return cls(obj["isValid"], s("payer"), s("invalidReason"), s("invalidMessage"), extra)


@dataclass(frozen=True, slots=True)
class SupportedKind:
    x402_version: int
    scheme: str
    network: str
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Supported:
    kinds: list[SupportedKind]
    extensions: list[str] = field(default_factory=list)
    signers: Mapping[str, list[str]] = field(default_factory=dict)

    def supports(self, scheme: str, network: str, version: int = 2) -> bool:
        return any(
            k.scheme == scheme and k.network == network and k.x402_version == version for k in self.kinds
        )


AuthHeaders = Callable[[str], Mapping[str, str]]  # endpoint name → headers


class FacilitatorClient:
    """Async client over an injected :class:`aiohttp.ClientSession`.

    ``auth_headers(endpoint)`` (``"supported"``, ``"verify"``, ``"settle"``)
    supplies per-call auth, e.g. a CDP JWT. Timeouts are per call.
    """

    __slots__ = ("_auth", "_session", "_url", "settle_timeout", "verify_timeout")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        verify_timeout: float = 5.0,
        settle_timeout: float = 30.0,
        auth_headers: AuthHeaders | None = None,
    ) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._auth = auth_headers
        self.verify_timeout = verify_timeout
        self.settle_timeout = settle_timeout

    async def supported(self) -> Supported:
        """``GET /supported``; raises FacilitatorError."""
        status, obj = await self._call("GET", "supported", None, self.verify_timeout)
        if status != 200 or not isinstance(obj, dict) or not isinstance(obj.get("kinds"), list):
            raise FacilitatorError("facilitator_bad_response", f"/supported: HTTP {status}")
        try:
            kinds = [
                SupportedKind(int(k["x402Version"]), str(k["scheme"]), str(k["network"]), k.get("extra"))
                for k in obj["kinds"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise FacilitatorError("facilitator_bad_response", f"/supported: {exc}") from exc
        return Supported(kinds, list(obj.get("extensions") or []), dict(obj.get("signers") or {}))

    async def verify(self, payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> VerifyResult:
        """``POST /verify``; a rejection is a result, transport trouble raises."""
        status, obj = await self._call(
            "POST", "verify", self._body(payload, requirements), self.verify_timeout
        )
        return self._parse(status, obj, VerifyResult.from_json)

    async def settle(self, payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> SettleResult:
        """``POST /settle``; ``success: false`` is a result (including
        ``settlement_pending``), transport trouble raises FacilitatorError."""
        status, obj = await self._call(
            "POST", "settle", self._body(payload, requirements), self.settle_timeout
        )
        return self._parse(status, obj, SettleResult.from_json)

    @staticmethod
    def _body(payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "x402Version": payload.get("x402Version", 2),
            "paymentPayload": dict(payload),
            "paymentRequirements": dict(requirements),
        }

    @staticmethod
    def _parse(status: int, obj: Any, parse: Callable[[Any], _T]) -> _T:
        try:
            result = parse(obj)
        except Malformed as exc:
            reason = "facilitator_unavailable" if status >= 500 else "facilitator_bad_response"
            raise FacilitatorError(reason, f"HTTP {status}: {exc.detail}") from exc
        if status >= 500:
            raise FacilitatorError("facilitator_unavailable", f"HTTP {status}")
        return result

    async def _call(self, method: str, endpoint: str, body: Any, timeout: float) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self._auth is not None:
            headers.update(self._auth(endpoint))
        try:
            async with self._session.request(
                method,
                f"{self._url}/{endpoint}",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise FacilitatorError("facilitator_timeout", f"/{endpoint} after {timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise FacilitatorError("facilitator_unavailable", f"/{endpoint}: {exc}") from exc
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None


# ---------------------------------------------------------------------------
# Durable pending-settlement queue on the Store's primitive operations
# ---------------------------------------------------------------------------
#
# Key scheme (each operation touches one key, so Redis Cluster is fine):
#   key("x402q", "head")            incr counter: last sequence number issued
#   key("x402q", "tail")            set/get hint: lowest sequence maybe still queued
#   key("x402q", "item:<seq>")      JSON PendingSettlement, no TTL (durable)
#   key("x402q", "lease:<seq>:<n>") claim(ttl=lease): one worker runs attempt n
#   key("x402q", "dead:<seq>")      JSON of a terminally failed item, for operators
#   key("x402q", "done:<network>:<payer>:<nonce>")  tx hash, TTL 7 days (receipt)
#   key("x402q", "held:<network>:<payer>:<nonce>")  JSON {id, digest}, TTL 7 days:
#       a settle-before payment whose inline settle got no answer; the client
#       was told 503 ``settlement_pending`` and may come back with it
#   key("x402q", "probe:<seq>")     claim(ttl=lease): one client retry probes it
#   key("x402q", "served:<network>:<payer>:<nonce>")  claim, TTL 7 days: the
#       held payment bought its one request
#
# enqueue = incr(head) then set(item) — one write makes the item durable, and
# the gateway awaits it before releasing the response. A worker scans
# tail..head; an absent item is finished. The tail hint may lag or be
# overwritten by a slower worker: that costs a longer scan, never a loss.
# With a native queue (Redis Stream XADD/XREADGROUP/XACK/XAUTOCLAIM, an
# SQLite table) the same semantics need no scan; see the report.

log = logging.getLogger("popgate.settlement")
Step = Callable[[], Awaitable[object]]

_Q = "x402q"
_SEQ_WINDOW = 100 * 365 * 86400.0
_RECEIPT_TTL = 7 * 86400.0
DEBT_WINDOW = 30 * 86400.0  # a payer's unsettled-debt counter lives this long


@dataclass(slots=True)
class PendingSettlement:
    id: int
    payload: dict[str, Any]
    requirements: dict[str, Any]
    payer: str
    network: str
    nonce: str
    valid_before: int
    created: float
    attempts: int = 0
    next_at: float = 0.0
    transaction: str = ""
    last_error: str = ""
    debt_key: str = ""  # records written before debt_keys: the payer's counter only
    debt_keys: list[str] = field(default_factory=list)  # unsettled-debt counters (settle-after)
    amount: int = 0  # what this settlement is worth (atomic units)
    ambiguous: bool = False  # a /settle for it may have reached the facilitator unanswered
    known_key: str = ""  # set when settled: the payer has paid (settle-after, debt.known_key)
    credit: list[str] = field(default_factory=list)  # top-up: [account, ref, new key id, its sha256 hex]

    def dumps(self) -> bytes:
        return json.dumps({s: getattr(self, s) for s in self.__slots__}, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> PendingSettlement:
        obj = json.loads(raw)
        return cls(**{k: v for k, v in obj.items() if k in cls.__slots__})

    def maybe_sent(self, now: float, lease: float) -> bool:
        """Could an earlier /settle for this record have been carried out?
        Yes after an unanswered call or a broadcast tx; and for a record
        older than a lease that no attempt ever rescheduled (its gateway
        died mid-call)."""
        return (
            self.ambiguous or bool(self.transaction) or (self.attempts == 0 and now - self.created >= lease)
        )


def payment_digest(payload: Mapping[str, Any]) -> str:
    """Identity of one signed payment: sha256 of the canonical JSON of its
    scheme payload (authorization + signature)."""
    inner = payload.get("payload", payload)
    raw = json.dumps(inner, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


class SettlementQueue:
    """Settle ``exact`` payments durably with retries and backoff.

    Outcomes of an attempt: ``settled`` (item removed, receipt kept),
    ``pending`` (facilitator said ``settlement_pending`` with a tx hash: the
    identical payload is re-sent later so the facilitator reconciles instead
    of re-broadcasting), ``retry`` (transport error: exponential backoff),
    ``failed`` (terminal rejection, or out of attempts / past
    ``validBefore`` with no tx: moved to ``dead:<seq>``), ``busy`` (another
    worker holds the lease).

    A transport error marks the record ``ambiguous``: the facilitator may
    have settled it anyway (it does not stop because we hung up). A later
    answer ``invalid_exact_evm_nonce_already_used`` (``permit2_invalid_nonce``
    for ``upto``) for such a record (the SDK facilitator's answer to a
    re-settle of a spent authorization) is
    then read as *settled*: the nonce is spent, and the only authorization
    we ever sent for it is this one (see :meth:`PendingSettlement.maybe_sent`).
    The same answer to a first send stays a rejection (a replay).

    Once the facilitator has answered, the answer is final for the request
    (money moved, or a tx is broadcast): the bookkeeping after it (receipt,
    record, debt counters, hold) never raises :class:`StoreUnavailable`. A
    step the store refused is kept in :attr:`followups` and retried, in
    order, at the start of every :meth:`run_once` (the settlement worker);
    the record written before the call (:meth:`enqueue`) stays in the store
    until the receipt is written, so a gateway that dies meanwhile loses
    nothing: a worker re-sends it after the lease and reads the facilitator's
    "nonce already used" as settled (:meth:`PendingSettlement.maybe_sent`).
    """

    MAX_FOLLOWUPS = 10_000  # beyond that the store records are the only copy

    def __init__(
        self,
        store: Store,
        facilitator: FacilitatorClient | Any,
        *,
        backoff: float = 2.0,
        backoff_max: float = 300.0,
        lease: float = 60.0,
        max_attempts: int = 20,
        scan: int = 1000,
    ) -> None:
        self._key = key
        self._store, self._fac = store, facilitator
        self.backoff, self.backoff_max, self.lease = backoff, backoff_max, lease
        self.max_attempts, self.scan = max_attempts, scan
        self.followups: list[tuple[str, list[Step]]] = []
        self._catching_up = False

    async def run_steps(self, what: str, steps: list[Step]) -> bool:
        """Run store ``steps`` in order; on StoreUnavailable keep the rest for
        :meth:`catch_up` (False). Never raises StoreUnavailable."""
        for i, step in enumerate(steps):
            try:
                await step()
            except StoreUnavailable as exc:
                if len(self.followups) < self.MAX_FOLLOWUPS:
                    self.followups.append((what, steps[i:]))
                log.warning("settlement bookkeeping of %s deferred: store unavailable: %s", what, exc)
                return False
        return True

    async def catch_up(self) -> int:
        """Retry deferred bookkeeping, oldest first, stopping at the first step
        the store still refuses; returns how many entries are left. Entries
        stay listed until written (one catch-up at a time)."""
        if self._catching_up:
            return len(self.followups)
        self._catching_up = True
        try:
            while self.followups:
                what, steps = self.followups[0]  # only this loop removes entries
                for i, step in enumerate(steps):
                    try:
                        await step()
                    except StoreUnavailable:
                        self.followups[0] = (what, steps[i:])
                        return len(self.followups)
                self.followups.pop(0)
            return 0
        finally:
            self._catching_up = False

    async def enqueue(
        self,
        *,
        payload: Mapping[str, Any],
        requirements: Mapping[str, Any],
        payer: str,
        network: str,
        nonce: str,
        valid_before: int,
        now: float,
        debt_keys: tuple[str, ...] = (),
        amount: int = 0,
        inline: bool = False,
        known_key: str = "",
        credit: tuple[str, str, str, str] | None = None,
    ) -> PendingSettlement:
        """Write the pending record; await this before releasing a response.

        ``debt_keys`` (optional): store counters already raised by ``amount``
        (:mod:`gateway.payments.debt`); a successful settlement lowers them
        again and sets ``known_key`` (the payer has paid). ``inline``:
        the caller attempts it at once, so workers leave it alone for a
        lease (they then take it as an orphan whose call may have happened).
        ``credit`` (a credits top-up): ``amount`` is credited to that account
        (idempotent ref) when the payment settles, whoever concludes it, and
        the new key (when one was issued) stored."""
        seq = await self._store.incr(self._key(_Q, "head"), 1, _SEQ_WINDOW)
        item = PendingSettlement(
            seq,
            dict(payload),
            dict(requirements),
            payer,
            network,
            nonce,
            valid_before,
            now,
            next_at=now + (self.lease if inline else 0.0),
            debt_keys=list(debt_keys),
            amount=amount,
            known_key=known_key,
            credit=list(credit or ()),
        )
        await self._store.set(self._key(_Q, f"item:{seq}"), item.dumps())
        return item

    async def settle_now(self, item: PendingSettlement, now: float) -> tuple[str, SettleResult | None]:
        """Inline attempt (the SDK's flow: one immediate retry on
        ``settlement_pending``). Whatever happens, the record stays until an
        outcome is final, so a worker finishes what this leaves. Never raises
        StoreUnavailable: the record is durable and this request alone holds
        its nonce (workers keep off it for a lease), so a lease the store
        cannot grant is taken as granted."""
        outcome, result = await self.attempt(item, now, inline=True)
        if outcome == "pending":
            again, answer = await self.attempt(item, now, inline=True)
            if again != "busy":
                outcome, result = again, answer
        return outcome, result

    async def attempt(
        self, item: PendingSettlement, now: float, *, inline: bool = False
    ) -> tuple[str, SettleResult | None]:
        """One leased settle attempt for ``item`` (updated in place)."""
        try:
            won = await self._store.claim(self._key(_Q, f"lease:{item.id}:{item.attempts}"), self.lease, 1)
        except StoreUnavailable:
            if not inline:
                raise
            won = True
        if not won:
            return "busy", None
        maybe_sent = item.maybe_sent(now, self.lease)
        try:
            result = await self._fac.settle(item.payload, item.requirements)
        except FacilitatorError as exc:
            item.last_error, item.ambiguous = exc.reason, True
            return await self._reschedule(item, now, "retry"), None
        return await self._conclude(item, now, result, maybe_sent, reschedule=True)

    async def probe(self, item: PendingSettlement, now: float) -> tuple[str, SettleResult | None]:
        """A client-driven attempt for a held record (its payer came back):
        one prober at a time per record (``probe:<seq>`` lease, separate from
        the worker's so a worker stuck on a slow call does not block it).
        A transport error leaves the record to the worker as it is
        (``retry``); ``busy`` when another retry is probing."""
        lease = self._key(_Q, f"probe:{item.id}")
        if not await self._store.claim(lease, self.lease, 1):
            return "busy", None
        try:
            maybe_sent = item.maybe_sent(now, self.lease)
            try:
                result = await self._fac.settle(item.payload, item.requirements)
            except FacilitatorError as exc:
                item.last_error = exc.reason
                return "retry", None
            return await self._conclude(item, now, result, maybe_sent, reschedule=False)
        finally:  # the next retry may probe at once (deferred if the store is away)
            await self.run_steps(f"probe #{item.id}", [lambda: self._store.delete(lease)])

    async def _conclude(
        self, item: PendingSettlement, now: float, result: SettleResult, maybe_sent: bool, *, reschedule: bool
    ) -> tuple[str, SettleResult | None]:
        spent = (NONCE_ALREADY_USED, PERMIT2_NONCE_USED)
        if not result.success and result.error_reason in spent and maybe_sent:
            # Spent by the settle we (or a facilitator on our behalf) sent earlier.
            result = SettleResult(
                True, result.transaction or item.transaction, item.network, result.payer or item.payer
            )
        if result.success:
            await self.run_steps(f"settled #{item.id}", self._settled_steps(item, result.transaction))
            return "settled", result
        if result.error_reason == SETTLEMENT_PENDING and result.transaction:
            item.transaction, item.last_error = result.transaction, SETTLEMENT_PENDING
            if reschedule:
                return await self._reschedule(item, now, "pending"), result
            await self.run_steps(f"pending #{item.id}", [self._save(item)])
            return "pending", result
        item.last_error = result.error_reason or "settle_failed"
        await self._bury(item)
        return "failed", result

    def _settled_steps(self, item: PendingSettlement, tx: str) -> list[Step]:
        """Receipt and top-up credit first, then the record goes (it is the
        crash backstop until they are written), then the debt counters and
        the known mark."""
        store = self._store
        done = self._key(_Q, f"done:{item.network}:{item.payer.lower()}:{item.nonce}")
        steps: list[Step] = [lambda: store.set(done, tx.encode(), _RECEIPT_TTL)]
        if len(item.credit) == 4 and item.amount > 0:
            account, ref, key_id, key_hash = item.credit
            if key_id:
                steps.append(lambda: store.set(key("apikey", key_id), bytes.fromhex(key_hash)))
            steps.append(lambda: store.credit_ledger(account, item.amount, "topup", ref, item.created))
        steps.append(lambda: store.delete(self._key(_Q, f"item:{item.id}")))
        if item.amount:
            steps.extend(self._lower(k, item.amount) for k in filter(None, [item.debt_key, *item.debt_keys]))
        if item.known_key:
            steps.append(lambda: store.set(item.known_key, b"1", DEBT_WINDOW))
        return steps

    def _lower(self, counter: str, amount: int) -> Step:
        return lambda: self._store.incr(counter, -amount, DEBT_WINDOW)

    def _save(self, item: PendingSettlement) -> Step:
        raw = item.dumps()  # the state now, not at a later retry
        return lambda: self._store.set(self._key(_Q, f"item:{item.id}"), raw)

    async def _reschedule(self, item: PendingSettlement, now: float, outcome: str) -> str:
        item.attempts += 1
        if item.attempts >= self.max_attempts or (now > item.valid_before and not item.transaction):
            await self._bury(item)
            return "failed"
        delay = (
            0.0
            if outcome == "pending" and item.attempts == 1
            else min(self.backoff_max, self.backoff * 2 ** (item.attempts - 1))
        )
        item.next_at = now + delay
        await self.run_steps(f"{outcome} #{item.id}", [self._save(item)])
        return outcome

    async def _bury(self, item: PendingSettlement) -> None:
        raw = item.dumps()
        dead, live = self._key(_Q, f"dead:{item.id}"), self._key(_Q, f"item:{item.id}")
        store = self._store
        await self.run_steps(f"failed #{item.id}", [lambda: store.set(dead, raw), lambda: store.delete(live)])

    async def receipt(self, network: str, payer: str, nonce: str) -> str | None:
        """The tx hash of a settled payment, kept for a week."""
        raw = await self._store.get(self._key(_Q, f"done:{network}:{payer.lower()}:{nonce}"))
        return raw.decode() if raw is not None else None

    async def item(self, item_id: int) -> PendingSettlement | None:
        """The queued record ``item_id`` (None once finished)."""
        raw = await self._store.get(self._key(_Q, f"item:{item_id}"))
        return PendingSettlement.loads(raw) if raw is not None else None

    def _held_key(self, network: str, payer: str, nonce: str) -> str:
        return self._key(_Q, f"held:{network}:{payer.lower()}:{nonce.lower()}")

    async def hold(self, item: PendingSettlement) -> None:
        """Remember that ``item``'s payer was told to come back with the same
        payment (settle-before, no answer from the facilitator)."""
        value = json.dumps({"id": item.id, "digest": payment_digest(item.payload)}).encode()
        held = self._held_key(item.network, item.payer, item.nonce)
        await self.run_steps(f"hold #{item.id}", [lambda: self._store.set(held, value, _RECEIPT_TTL)])

    async def held(self, network: str, payer: str, nonce: str, payload: Mapping[str, Any]) -> int | None:
        """The record id of a held payment when ``payload`` is that very
        payment (same authorization and signature); None otherwise."""
        raw = await self._store.get(self._held_key(network, payer, nonce))
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
            item_id, digest = int(obj["id"]), str(obj["digest"])
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(digest.encode(), payment_digest(payload).encode()):
            return None
        return item_id

    async def claim_served(self, network: str, payer: str, nonce: str) -> bool:
        """Spend-once: True for the first caller only (the held payment's
        one request)."""
        return await self._store.claim(
            self._key(_Q, f"served:{network}:{payer.lower()}:{nonce.lower()}"), _RECEIPT_TTL, 1
        )

    async def pending(self) -> list[PendingSettlement]:
        """Queued items in sequence order (advances the tail hint)."""
        head = await self._store.incr(self._key(_Q, "head"), 0, _SEQ_WINDOW)
        raw_tail = await self._store.get(self._key(_Q, "tail"))
        tail = int(raw_tail) if raw_tail else 1
        items: list[PendingSettlement] = []
        new_tail = None
        for seq in range(tail, min(head, tail + self.scan - 1) + 1):
            raw = await self._store.get(self._key(_Q, f"item:{seq}"))
            if raw is not None:
                items.append(PendingSettlement.loads(raw))
                new_tail = seq if new_tail is None else new_tail
        new_tail = new_tail if new_tail is not None else min(head, tail + self.scan - 1) + 1
        if new_tail != tail:
            await self._store.set(self._key(_Q, "tail"), str(new_tail).encode())
        return items

    async def cancel(self, item: PendingSettlement) -> None:
        """Drop a record whose settlement was never confirmed and must not be
        retried (the caller refused the request and released the payment)."""
        await self._store.delete(self._key(_Q, f"item:{item.id}"))

    async def dead(self, item_id: int) -> PendingSettlement | None:
        raw = await self._store.get(self._key(_Q, f"dead:{item_id}"))
        return PendingSettlement.loads(raw) if raw is not None else None

    async def run_once(self, now: float, limit: int = 100) -> list[tuple[int, str]]:
        """Deferred bookkeeping first, then attempt every due item (up to
        ``limit``); return (id, outcome)."""
        await self.catch_up()
        out: list[tuple[int, str]] = []
        for item in await self.pending():
            if len(out) >= limit:
                break
            if item.next_at <= now:
                outcome, _ = await self.attempt(item, now)
                out.append((item.id, outcome))
        return out
