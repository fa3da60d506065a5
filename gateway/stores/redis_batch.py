"""Group commit for Redis scripts: one round trip for every call made meanwhile.

A call to :meth:`GroupCommit.run` queues ``EVALSHA`` of one script; when no
round trip is in flight, the queue goes out at once as one pipeline (not a
transaction: each script stays atomic on its own key, as when sent alone);
calls made while a round trip is in flight wait and go out together in the
next one. Under load this spends a round trip and the client's per-command
overhead on many calls; alone, a call costs what it did.

Each caller gets its own script's result (or its own error). ``NOSCRIPT``
(a new or failed-over server) re-sends that call with ``EVAL``. With
``replica_acks`` the pipeline ends with ``WAIT acks``: every write in it
counts as done only once that many replicas acknowledged it, else every
caller gets :class:`StoreUnavailable` (fail closed). Connection, timeout and
cluster errors become :class:`StoreUnavailable` for every caller of the batch.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.exceptions import NoScriptError, ReadOnlyError, RedisClusterException, RedisError, ResponseError

from popgate.gateway.stores.base import StoreUnavailable

MAX_BATCH = 256
Call = tuple["Script", list[str], list[Any], "asyncio.Future[Any]"]


class Script(Protocol):
    sha: str
    source: str


class GroupCommit:
    """Coalesces concurrent script calls into pipelines (see module doc)."""

    def __init__(
        self, client: Any, acks: int = 0, wait_ms: int = 0, slots: asyncio.Semaphore | None = None
    ) -> None:
        self.client, self.acks, self.wait_ms, self.slots = client, acks, wait_ms, slots
        self._queue: list[Call] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # our own connection from the client's pool settings
        self._deadline: float | None = None  # its socket timeout, for a whole batch
        self.round_trips = 0  # for tests and the benchmark

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(script, keys, args)

    def submit(self, script: Script, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue a call; its future (not awaited: it goes out with the next
        round trip, after every call queued before it)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, fut))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await self._send(batch)
                except BaseException as exc:
                    err = _unavailable(exc)
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (*_, fut), r in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(r, Exception):
                        fut.set_exception(_unavailable(r) if _transport(r) else r)
                    else:
                        fut.set_result(r)
        finally:
            self._task = None

    async def _send(self, batch: list[Call]) -> list[Any]:
        if self.slots is not None:
            async with self.slots:
                return await self._pipeline(batch)
        return await self._pipeline(batch)

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        self.round_trips += 1
        out = await self._round_trip([("EVALSHA", s.sha, len(k), *k, *a) for s, k, a, _ in batch])
        missing = [i for i, r in enumerate(out) if isinstance(r, NoScriptError)]
        if missing:  # the server lost its script cache: send those again in full
            again = await self._round_trip(
                [("EVAL", batch[i][0].source, len(batch[i][1]), *batch[i][1], *batch[i][2]) for i in missing]
            )
            for i, r in zip(missing, again, strict=True):
                out[i] = r
        return out

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` (then ``WAIT``) in one round trip. On one plain server:
        written at once on this batcher's own connection (one round trip is in
        flight at a time) and every reply read, without the client's per-command
        machinery; with replica acks or Sentinel: the client's pipeline."""
        if self.acks:
            commands = [*commands, ("WAIT", self.acks, self.wait_ms)]
        pool: Any = getattr(self.client, "connection_pool", None)
        if self.acks or type(pool) not in (ConnectionPool, BlockingConnectionPool):
            pipe = self.client.pipeline(transaction=False)
            for c in commands:
                pipe.execute_command(*c)
            out = list(await pipe.execute(raise_on_error=False))
        else:
            if self._conn is None:
                conn = pool.make_connection()
                # one deadline (the socket timeout) for a whole batch, connecting included;
                # not a timer (and a task, for a write) per write and per reply
                self._deadline, conn.socket_timeout = conn.socket_timeout, None
                self._conn = conn
            conn = self._conn
            try:
                async with asyncio.timeout(self._deadline):
                    await conn.send_packed_command(_pack(commands), check_health=False)
                    out = []
                    for _ in commands:
                        try:
                            out.append(await conn.read_response())  # no socket timeout: no timer
                        except ResponseError as exc:  # that command's own error: the stream stays in step
                            out.append(exc)
                if any(isinstance(r, ReadOnlyError) for r in out):
                    # a demoted master: reconnect (with Sentinel, to the new one)
                    await conn.disconnect(nowait=True)
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be pending: never reuse the stream
                raise
        if self.acks:
            acked = out.pop()
            if isinstance(acked, Exception) or int(acked) < self.acks:
                raise StoreUnavailable(f"redis: writes acknowledged by {acked} of {self.acks} replicas")
        return out

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None


def _pack(commands: list[tuple[Any, ...]]) -> bytes:
    """RESP arrays of bulk strings (str, bytes and int arguments only)."""
    parts: list[bytes] = []
    add = parts.append
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for a in command:
            t = type(a)
            if t is str:
                b = a.encode()
            elif t is bytes:
                b = a
            elif t is int:
                b = b"%d" % a
            else:
                b = _arg(a)
            add(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def _arg(a: Any) -> bytes:
    """A str, bytes or int subclass as bytes; TypeError for anything else."""
    if isinstance(a, bytes):
        return bytes(a)
    if isinstance(a, str):
        return str(a).encode()
    if isinstance(a, int) and not isinstance(a, bool):
        return b"%d" % a
    raise TypeError(f"cannot send a {type(a).__name__} to redis")


def _transport(exc: BaseException) -> bool:
    return isinstance(exc, RedisError | RedisClusterException | OSError | TimeoutError)


def _unavailable(exc: BaseException) -> BaseException:
    if isinstance(exc, StoreUnavailable) or not _transport(exc):
        return exc
    return StoreUnavailable(f"redis: {type(exc).__name__}: {exc}")
