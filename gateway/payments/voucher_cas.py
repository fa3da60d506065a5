"""Plain vouchers on Redis in one round trip: verify, then compare-and-set.

:class:`VoucherDesk` takes the channel's busy lock, verifies, then commits:
two round trips, plus a third for the lock on failure. For the common case,
an ECDSA voucher against a fresh chain mirror, :class:`FastVouchers` does
the same in one ``EVALSHA`` (group-committed with the other requests' calls,
:mod:`gateway.stores.redis_batch`)::

    record (this gateway's cached copy, or read once) ─► verify_batch(record)
    ─► VOUCH: no live busy lock on the channel, and ``ver`` is still the
       verified record's (every commit bumps it) ─► charged, smax, sig := the
       voucher; ver += 1  — else the current record comes back: verify again

``ver`` unchanged means every field the check read (charged total, chain
mirror, its sync time) is what it was, so the decision is the one the locked
path would have taken; two vouchers racing on one channel, on any gateways
sharing the store, cannot both pass the compare-and-set, and the accepted one
is written (``smax``/``sig``, what a claim submits) before the origin is
asked. A live busy lock (a deposit or refund at the facilitator) is
``channel_busy``; an expired one is dropped, so its holder can no longer
commit. A refusal is only given on the record as the store has it (a cached
copy is re-read first). Deposits, refunds, EIP-1271 vouchers and stale
mirrors take the locked path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from popgate.gateway.payments.channels import INDEX, READ_FIELDS, Fields, Reservation, _s
from popgate.gateway.payments.vouchers import Begun, VoucherDesk, fresh_for, view_of
from popgate.gateway.stores.base import key
from popgate.gateway.stores.redis import RedisStore, _Script
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import PaymentPayload, Requirements
from popgate.verifiers.x402_batch import verify_batch
from popgate.verifiers.x402_channel import ERR_CHANNEL_BUSY, ZERO_ADDRESS, parse_payload

FIELDS = (*READ_FIELDS, "ver", "pend", "pexp")
_LUA_FIELDS = "{" + ", ".join(f"'{f}'" for f in FIELDS) + "}"

READ = f"return redis.call('HMGET', KEYS[1], unpack({_LUA_FIELDS}))"

# ARGV: ver, now_ms, charged, smax, sig, since, cfg ('' = already set), net
VOUCH = f"""
local pend = redis.call('HGET', KEYS[1], 'pend')
local live = pend and tonumber(redis.call('HGET', KEYS[1], 'pexp') or '0') > tonumber(ARGV[2])
if live then return {{0}} end
if (redis.call('HGET', KEYS[1], 'ver') or '0') ~= ARGV[1] then
  return {{2, redis.call('HMGET', KEYS[1], unpack({_LUA_FIELDS}))}}
end
if pend then redis.call('HDEL', KEYS[1], 'pend', 'pexp') end
redis.call('HSET', KEYS[1], 'charged', ARGV[3], 'smax', ARGV[4], 'sig', ARGV[5])
redis.call('HSETNX', KEYS[1], 'since', ARGV[6])
if ARGV[7] ~= '' then
  redis.call('HSETNX', KEYS[1], 'cfg', ARGV[7])
  redis.call('HSETNX', KEYS[1], 'net', ARGV[8])
end
return {{1, redis.call('HINCRBY', KEYS[1], 'ver', 1)}}
"""

CACHE_MAX = 65536
ATTEMPTS = 3


def _fields(values: list[object]) -> Fields:
    return {f: _s(v) for f, v in zip(FIELDS, values, strict=True) if v is not None}


def _locked(rec: Mapping[str, str], now_ms: int) -> bool:
    return "pend" in rec and int(rec.get("pexp", "0")) > now_ms


class FastVouchers:
    """One-round-trip vouchers over a :class:`VoucherDesk` on Redis (see module doc)."""

    def __init__(self, desk: VoucherDesk, store: RedisStore) -> None:
        self.desk, self.store = desk, store
        self._read, self._vouch = _Script(store.client, READ), _Script(store.client, VOUCH)
        self._cache: dict[str, Fields] = {}  # channel id → the record as last seen

    async def charge(self, payment: PaymentPayload, offers: list[Requirements], now: float) -> Begun:
        """Verify and charge (``begin`` + ``finish(served)``); raises
        VerificationError with nothing charged."""
        p = parse_payload(payment.payload)
        if p.kind != "voucher" or p.config.payer_authorizer == ZERO_ADDRESS:
            return await self._locked_path(payment, offers, now, p.channel_id)
        # Nothing is written before verify_batch passed (a read creates no record):
        # garbage never leaves anything in Redis.
        cid, now_ms = p.channel_id, int(now * 1000)  # 0x + lower-case hex
        k = key("chan", cid)
        rec, fresh = self._cache.get(cid), False
        if rec is None:
            rec, fresh = await self._load(cid), True
        for _ in range(ATTEMPTS):
            if _locked(rec, now_ms):
                if fresh:
                    raise VerificationError(ERR_CHANNEL_BUSY, "another request holds the channel")
                rec, fresh = await self._load(cid), True
                continue
            view = view_of(rec, now, fresh_for(p.config.withdraw_delay))
            if view is None:  # the mirror is stale: read the chain under the lock
                return await self._locked_path(payment, offers, now, cid)
            try:
                d = verify_batch(payment, offers, _charged(rec), view, now, self.desk.cfg, parsed=p)
            except VerificationError:
                if fresh:
                    raise
                rec, fresh = await self._load(cid), True  # refuse only on the store's record
                continue
            first = "cfg" not in rec
            if first:  # first charge: index it before writing (the claim worker's list)
                await self.store._do(self.store.client.sadd(INDEX, cid))
            sig = "0x" + p.voucher.signature.hex()
            smax, charged, since = str(p.voucher.max_claimable), str(d.charged_after), str(now)
            args = [rec.get("ver", "0"), now_ms, charged, smax, sig, since]
            cfg = json.dumps(p.config.to_json(), sort_keys=True) if first else ""
            args += [cfg, d.requirements.network if first else ""]
            out = await self.store.run_script(self._vouch, [k], args)
            status = int(out[0])
            if status == 1:
                done = dict(rec, charged=charged, smax=smax, sig=sig, ver=str(int(out[1])))
                done.setdefault("since", since)
                done.setdefault("cfg", "1")  # only whether it is set matters here
                self._remember(cid, done)
                return Begun(d, Reservation(cid, "", done), view, False)
            if status == 0:
                self._cache.pop(cid, None)
                raise VerificationError(ERR_CHANNEL_BUSY, "another request holds the channel")
            rec, fresh = _fields(list(out[1])), True
            self._remember(cid, rec)
        raise VerificationError(ERR_CHANNEL_BUSY, "the channel kept changing")

    async def _locked_path(
        self, payment: PaymentPayload, offers: list[Requirements], now: float, cid: str
    ) -> Begun:
        self._cache.pop(cid.lower(), None)
        begun = await self.desk.begin(payment, offers, now)
        if not await self.desk.finish(begun, True, now):
            raise VerificationError(ERR_CHANNEL_BUSY, "lock lost before commit")
        return begun

    async def _load(self, cid: str) -> Fields:
        rec = _fields(list(await self.store.run_script(self._read, [key("chan", cid)], [])))
        self._remember(cid, rec)
        return rec

    def _remember(self, cid: str, rec: Fields) -> None:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        if "pend" in rec:
            self._cache.pop(cid, None)
            return
        self._cache[cid] = rec


def _charged(rec: Mapping[str, str]) -> int | None:
    v = rec.get("charged")
    return None if v is None else int(v)
