"""Prepaid credits: API keys, balances in atomic units, an append-only ledger.

API keys look like ``pgk_<id>_<secret>`` (``id``: 8 random bytes hex, the
lookup handle; ``secret``: 32 random bytes base64url). The full key is shown
once at issue; only ``sha256(key)`` is stored, and a presented key is
compared against it in constant time. SHA-256 without salt is enough for
256-bit random secrets (no dictionary to attack).

Every balance change is one atomic store operation that also appends a
ledger entry, so ``balance == sum(entry.delta)`` for each account at all
times (:func:`reconcile`). A ``ref`` (request id, x402 tx hash) makes an
operation idempotent: a retried debit with the same ref changes nothing and
returns the balance after the original.

Store operations this needs (the lead adds them to the Store protocol; the
Lua and SQL below are their implementations, :class:`LedgerModel` the
reference semantics, and the tests run all three against each other):

    debit_ledger(account, amount, ref, at)  -> int | None   # None: insufficient
    credit_ledger(account, amount, kind, ref, at) -> int    # top-up / refund
    ledger(account, since_seq=0, limit=1000) -> list[LedgerEntry]
    balance(account) -> int
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass, field

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.spend import key as store_key

KEY_PREFIX = "pgk_"
_KEY_RE = re.compile(r"pgk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class BadApiKey(VerificationError):
    """Any way an API key can be wrong (one reason: no oracle)."""

    reason = "bad_api_key"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str  # show once, never store
    key_id: str  # lookup handle, safe to log
    key_hash: bytes  # sha256(key): what the store keeps


def issue_api_key() -> IssuedKey:
    """Mint a new random API key."""
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key, key_id, hashlib.sha256(key.encode()).digest())


def key_id_of(presented: str) -> str:
    """The lookup id of a presented key; raises BadApiKey when malformed."""
    m = _KEY_RE.fullmatch(presented)
    if m is None:
        raise BadApiKey(detail="not a pgk_ key")
    return m.group(1)


def check_api_key(presented: str, stored_hash: bytes | None) -> None:
    """Raise BadApiKey unless ``sha256(presented) == stored_hash`` (constant
    time). ``stored_hash`` None (unknown id) is compared against a dummy so
    timing does not reveal which ids exist."""
    digest = hashlib.sha256(presented.encode()).digest()
    ok = hmac.compare_digest(digest, stored_hash or b"\x00" * 32)
    if not ok or stored_hash is None:
        raise BadApiKey(detail="key does not match")


def bearer_key(authorization: str | None) -> str | None:
    """The key in ``Authorization: Bearer pgk_...``, or None if there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip().startswith(KEY_PREFIX):
        return None
    return value.strip()


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    seq: int  # per-account, 1, 2, 3 ... with no gaps
    account: str
    delta: int  # negative for debits
    balance_after: int
    kind: str  # debit | topup | refund
    ref: str
    at: float


@dataclass
class LedgerModel:
    """Pure-Python reference semantics of the ledger operations."""

    balances: dict[str, int] = field(default_factory=dict)
    entries: dict[str, list[LedgerEntry]] = field(default_factory=dict)
    refs: dict[tuple[str, str], int] = field(default_factory=dict)

    def _append(self, account: str, delta: int, kind: str, ref: str, at: float) -> int:
        bal = self.balances.get(account, 0) + delta
        log = self.entries.setdefault(account, [])
        log.append(LedgerEntry(len(log) + 1, account, delta, bal, kind, ref, at))
        self.balances[account] = bal
        if ref:
            self.refs[(account, ref)] = bal
        return bal

    def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        if ref and (account, ref) in self.refs:
            return self.refs[(account, ref)]
        if self.balances.get(account, 0) < amount:
            return None
        return self._append(account, -amount, "debit", ref, at)

    def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        if amount <= 0 or kind not in ("topup", "refund"):
            raise ValueError("positive amount and kind topup|refund required")
        if ref and (account, ref) in self.refs:
            return self.refs[(account, ref)]
        return self._append(account, amount, kind, ref, at)

    def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        return [e for e in self.entries.get(account, []) if e.seq > since_seq][:limit]

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)


def reconcile(balance: int, entries: list[LedgerEntry]) -> None:
    """Raise AssertionError unless the ledger explains the balance exactly:
    gap-free seqs, each ``balance_after`` the running sum, never negative."""
    running = 0
    for i, e in enumerate(entries, 1):
        running += e.delta
        if e.seq != i:
            raise AssertionError(f"seq gap at {i}")
        if not e.balance_after == running >= 0:
            raise AssertionError(f"entry {i} balance {e.balance_after} != {running}")
    if running != balance:
        raise AssertionError(f"ledger sums to {running}, balance is {balance}")


# ---------------------------------------------------------------------------
# Redis: one Lua script per operation. All keys share the hash tag
# {credits:<account>} (see gateway.stores.base.key), so the script is
# cluster-safe. KEYS = [balance, ledger stream, refs hash, seq counter]
# (the ``redis_keys`` helper). Ledger entries are XADD'ed to a stream with
# an explicit id "<seq>-1" (monotonic, gap-free per account; the stream is
# append-only by construction: we never XDEL/XTRIM it).
# ARGV = [delta (signed), kind, ref, at]. Returns the new balance, or -1
# when a debit is not covered (nothing changes).
# ---------------------------------------------------------------------------

LEDGER_LUA = """
local delta = tonumber(ARGV[1])
local ref = ARGV[3]
if ref ~= '' then
  local prior = redis.call('HGET', KEYS[3], ref)
  if prior then return tonumber(prior) end
end
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
if bal + delta < 0 then return -1 end
bal = redis.call('INCRBY', KEYS[1], delta)
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[2], seq .. '-1', 'delta', delta, 'bal', bal,
           'kind', ARGV[2], 'ref', ref, 'at', ARGV[4])
if ref ~= '' then redis.call('HSET', KEYS[3], ref, bal) end
return bal
"""


def redis_keys(account: str) -> list[str]:
    tag = store_key("credits", account)
    return [f"{tag}:bal", f"{tag}:ledger", f"{tag}:refs", f"{tag}:seq"]


# ---------------------------------------------------------------------------
# SQLite: one IMMEDIATE transaction per operation. Triggers make the ledger
# append-only; CHECK keeps balances non-negative; UNIQUE(account, ref) makes
# refs idempotent. Run LEDGER_SCHEMA once; LEDGER_OP_SQL is the statement
# sequence, executed in order with named parameters :account :delta :kind
# :ref :at inside BEGIN IMMEDIATE ... COMMIT (see SqliteLedger.apply).
# ---------------------------------------------------------------------------

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_balance (
  account TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0), seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS credit_ledger (
  account TEXT NOT NULL, seq INTEGER NOT NULL, delta INTEGER NOT NULL,
  balance_after INTEGER NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL, at REAL NOT NULL,
  PRIMARY KEY (account, seq));
CREATE UNIQUE INDEX IF NOT EXISTS credit_ledger_ref ON credit_ledger(account, ref) WHERE ref != '';
CREATE TRIGGER IF NOT EXISTS credit_ledger_no_update BEFORE UPDATE ON credit_ledger
  BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS credit_ledger_no_delete BEFORE DELETE ON credit_ledger
  BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
"""

LEDGER_REF_SQL = (
    "SELECT balance_after FROM credit_ledger WHERE account = :account AND ref = :ref AND ref != ''"
)
LEDGER_OP_SQL = (
    "INSERT INTO credit_balance(account, balance, seq) VALUES (:account, 0, 0) "
    "ON CONFLICT(account) DO NOTHING",
    # The WHERE makes an uncovered debit touch no row (rowcount 0 → roll back).
    "UPDATE credit_balance SET balance = balance + :delta, seq = seq + 1 "
    "WHERE account = :account AND balance + :delta >= 0 RETURNING balance, seq",
    "INSERT INTO credit_ledger(account, seq, delta, balance_after, kind, ref, at) "
    "VALUES (:account, :seq, :delta, :balance, :kind, :ref, :at)",
)
LEDGER_SELECT_SQL = (
    "SELECT seq, account, delta, balance_after, kind, ref, at FROM credit_ledger "
    "WHERE account = :account AND seq > :since ORDER BY seq LIMIT :limit"
)


class SqliteLedger:
    """Synchronous reference runner of the SQLite ledger SQL (tests, tools;
    the SQLite store backend runs the same statements on its own thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.isolation_level = None  # explicit BEGIN/COMMIT below
        conn.executescript(LEDGER_SCHEMA)

    def apply(self, account: str, delta: int, kind: str, ref: str, at: float) -> int | None:
        """Atomically add ``delta`` and append an entry; None if uncovered."""
        c = self._conn
        params = {"account": account, "delta": delta, "kind": kind, "ref": ref, "at": at}
        c.execute("BEGIN IMMEDIATE")
        try:
            prior = c.execute(LEDGER_REF_SQL, params).fetchone()
            if prior is not None:
                c.execute("COMMIT")
                return int(prior[0])
            c.execute(LEDGER_OP_SQL[0], params)
            row = c.execute(LEDGER_OP_SQL[1], params).fetchone()
            if row is None:
                c.execute("ROLLBACK")
                return None
            c.execute(LEDGER_OP_SQL[2], {**params, "balance": row[0], "seq": row[1]})
            c.execute("COMMIT")
            return int(row[0])
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        return self.apply(account, -amount, "debit", ref, at)

    def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        if amount <= 0 or kind not in ("topup", "refund"):
            raise ValueError("positive amount and kind topup|refund required")
        result = self.apply(account, amount, kind, ref, at)
        if result is None:
            raise RuntimeError(f"credit of {amount} to {account!r} refused")  # only debits can be
        return result

    def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        rows = self._conn.execute(LEDGER_SELECT_SQL, {"account": account, "since": since_seq, "limit": limit})
        return [LedgerEntry(*r) for r in rows]

    def balance(self, account: str) -> int:
        row = self._conn.execute(
            "SELECT balance FROM credit_balance WHERE account = ?", (account,)
        ).fetchone()
        return int(row[0]) if row else 0
