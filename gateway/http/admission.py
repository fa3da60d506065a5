"""Who may hold an upstream connection, and for how long they may wait for one.

Every proxied exchange holds one of ``[limits] pool_size`` slots from the moment
it is sent until its response is relayed. Without a bound, a few hundred clients
that each keep a request open (a body dripped at a byte every few seconds, an
origin made slow) hold every slot and everyone else waits forever. So:

* an *anonymous* request (class ``unknown`` or ``agent``, nothing paid) may use at
  most ``pool_size × (1 − pool_reserved)`` slots: the rest are kept for clients
  with a session or other verified evidence, or who paid, and those are also
  served first when slots free up;
* a client network (its /24 or /64) has at most ``network_requests`` anonymous
  requests in flight: more get 429 ``network_busy`` at once;
* nobody waits for a slot longer than ``pool_wait`` seconds: then 503
  ``upstream_busy`` with Retry-After.

The request body is read before a slot is taken (:mod:`gateway.http.paced_body`),
so a slow body holds a client connection, never an upstream one.
"""

from __future__ import annotations

import asyncio
import collections
import math

from popgate.gateway.errors import GatewayError
from popgate.gateway.ops.config import Limits
from popgate.gateway.pipeline.context import Context

VOUCHED = frozenset({"human", "account", "backed-agent", "verified-agent"})


class UpstreamBusy(GatewayError):
    status, reason, title = 503, "upstream_busy", "Upstream busy"
    retry_after = 2.0


class NetworkBusy(GatewayError):
    status, reason, title = 429, "network_busy", "Too many requests in flight from this network"
    retry_after = 1.0


def vouched(ctx: Context) -> bool:
    """A client with a session or verified evidence, or that paid for this request."""
    return ctx.klass in VOUCHED or ctx.charged > 0


class Ticket:
    """One admitted exchange; :meth:`UpstreamGate.leave` it exactly once."""

    __slots__ = ("done", "network", "pooled", "vouched")

    def __init__(self, network: str, vouched: bool) -> None:
        self.network, self.vouched = network, vouched
        self.pooled = self.done = False


class UpstreamGate:
    """Counts slots per kind of client and per network; no I/O, one event loop."""

    def __init__(self, limits: Limits) -> None:
        self.size = limits.pool_size
        self.open_share = max(1, math.floor(self.size * (1.0 - limits.pool_reserved)))
        self.per_network = limits.network_requests
        self.wait = limits.pool_wait
        self.used = 0
        self.anonymous = 0
        self.by_network: collections.Counter[str] = collections.Counter()
        self.waiting: dict[bool, collections.deque[tuple[asyncio.Future[None], Ticket]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }

    def enter(self, ctx: Context) -> Ticket:
        """Count the request against its network (anonymous only); NetworkBusy over the cap."""
        if vouched(ctx):
            return Ticket("", True)  # not counted per network, so its network is not computed
        ticket = Ticket(ctx.network, False)
        if self.by_network[ticket.network] >= self.per_network:
            raise NetworkBusy(f"{self.per_network} requests in flight from one network")
        self.by_network[ticket.network] += 1
        return ticket

    def _fits(self, ticket: Ticket) -> bool:
        if self.used >= self.size:
            return False
        return ticket.vouched or self.anonymous < self.open_share

    def _take(self, ticket: Ticket) -> None:
        ticket.pooled = True
        self.used += 1
        if not ticket.vouched:
            self.anonymous += 1

    async def slot(self, ticket: Ticket) -> None:
        """Take an upstream slot within ``pool_wait`` seconds, else UpstreamBusy."""
        queue = self.waiting[ticket.vouched]
        if not queue and self._fits(ticket):
            self._take(ticket)
            return
        waiter = asyncio.get_running_loop().create_future()
        queue.append((waiter, ticket))
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except TimeoutError:
            if ticket.pooled:
                return  # granted just as the deadline passed
            raise UpstreamBusy(f"no upstream slot within {self.wait} s") from None
        finally:
            waiter.cancel()  # no-op once granted; else _grant skips it (a slot granted is freed by leave)

    def leave(self, ticket: Ticket) -> None:
        if ticket.done:
            return
        ticket.done = True
        if not ticket.vouched:
            left = self.by_network[ticket.network] - 1
            if left > 0:
                self.by_network[ticket.network] = left
            else:
                del self.by_network[ticket.network]
        if ticket.pooled:
            self._release_slot(ticket)

    def _release_slot(self, ticket: Ticket) -> None:
        ticket.pooled = False
        self.used -= 1
        if not ticket.vouched:
            self.anonymous -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to waiters, vouched first."""
        for kind in (True, False):
            queue = self.waiting[kind]
            while queue:
                waiter, ticket = queue[0]
                if waiter.done():  # timed out or cancelled
                    queue.popleft()
                    continue
                if not self._fits(ticket):
                    break
                queue.popleft()
                self._take(ticket)
                waiter.set_result(None)
