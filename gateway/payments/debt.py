"""Settle-after debt: what popgate has served on payments not yet settled.

With ``[x402] settle = "after"`` a request is served on a signed authorization
before the facilitator has moved the money. A payer address is free to create,
so a per-payer limit alone bounds nothing: the unsettled debt is capped three
ways at once, in store counters shared by every gateway of the fleet:

* per payer address (``debt_limit``),
* per client network (``debt_limit_network``: the /24 or /64 the requests come from),
* in total (``debt_limit_total``: the most the operator can lose to payments that never settle).

Each counter is raised atomically (``incr``) and checked against its cap; over any
cap, every counter raised for this payment is lowered again and the request is
refused (``debt_limit``). A settled payment lowers them all (the settlement
record lists the keys); a payment that is never settled keeps its debt until
``DEBT_WINDOW`` expires the counters. With ``verify_new_payers`` (default on), a
payer with no settled payment yet is first checked by the facilitator's
``/verify`` (signature, balance, nonce on chain), so fresh keys with no funds are
refused before they are served; a payer is *known* once one of its payments settled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from popgate.gateway.payments.facilitator import DEBT_WINDOW
from popgate.gateway.stores.base import Store, StoreUnavailable, key

KNOWN_WINDOW = DEBT_WINDOW


def debt_keys(network: str, payer: str, client_network: str) -> tuple[str, str, str]:
    """The payer's, the client network's and the fleet's unsettled-debt counters."""
    return (
        key("x402debt", f"{network}:{payer.lower()}"),
        key("x402debt", f"net:{client_network}"),
        key("x402debt", "total"),
    )


def known_key(network: str, payer: str) -> str:
    """Set once a payment of this payer settled (see :func:`is_known`)."""
    return key("x402payer", f"{network}:{payer.lower()}")


async def is_known(store: Store, network: str, payer: str) -> bool:
    return await store.get(known_key(network, payer)) is not None


async def raise_debt(store: Store, keys: tuple[str, ...], limits: tuple[int, ...], amount: int) -> bool:
    """Add ``amount`` to every counter; False (and every counter as it was) when
    one would exceed its limit. Concurrent refusals may both back off: never
    more served than the limits allow, sometimes less (fails closed)."""
    raised: list[str] = []
    for k, limit in zip(keys, limits, strict=True):
        try:
            total = await store.incr(k, amount, DEBT_WINDOW)
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):  # else they expire with DEBT_WINDOW
                await lower_debt(store, raised, amount)
            raise
        raised.append(k)
        if total > limit:
            await lower_debt(store, raised, amount)
            return False
    return True


async def lower_debt(store: Store, keys: Iterable[str], amount: int) -> None:
    for k in keys:
        await store.incr(k, -amount, DEBT_WINDOW)
