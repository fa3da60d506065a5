"""Server-issued puzzles: issue, solve, verify, spend once."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers import puzzle
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.net import network_of

KEYS = puzzle.PuzzleKeys({"k1": b"k" * 32, "k0": b"o" * 32}, "k1")
NOW = 1_790_000_000.0
NET = "203.0.113.0/24"


def make(bits: int = 8, subs: int = 1, **kw: object) -> puzzle.Challenge:
    args = {"network": NET, "scope": "api", "bits": bits, "now": NOW, "ttl": 300, "subs": subs}
    args.update(kw)
    return puzzle.issue(KEYS, **args)  # type: ignore[arg-type]


def solution(c: puzzle.Challenge) -> str:
    nonces, _ = puzzle.solve(c.wire, c.bits, c.subs)
    return f"{c.wire}:{','.join(nonces)}"


async def verify(store: MemoryStore, value: str, **kw: object) -> puzzle.PuzzleAttestation:
    """Check a solution and spend it in ``store`` (what the gateway does)."""
    att = puzzle.verify(KEYS, value, **kw)  # type: ignore[arg-type]
    await spend(store, att.spend)
    return att


def reason(excinfo: pytest.ExceptionInfo[VerificationError]) -> str:
    return excinfo.value.reason


async def test_valid_solution_verifies_and_binds_fields() -> None:
    """A solved challenge verifies once and reports what it was bound to."""
    c = make()
    att = await verify(
        MemoryStore(),
        solution(c),
        now=NOW + 1,
        client_ip=ipaddress.ip_address("203.0.113.77"),
        scope="api",
    )
    assert (att.network, att.scope, att.bits, att.expires) == (NET, "api", 8, int(NOW) + 300)


async def test_second_use_is_replayed() -> None:
    """The same challenge cannot buy two passes, even with another valid nonce."""
    store, c = MemoryStore(), make(bits=4)
    await verify(store, solution(c), now=NOW, network=NET)
    with pytest.raises(VerificationError) as e:
        await verify(store, solution(c), now=NOW, network=NET)
    assert reason(e) == "replayed"
    other, _ = puzzle.solve(c.wire, c.bits, start=int(solution(c).rsplit(":", 1)[1]) + 1)
    with pytest.raises(VerificationError) as e:
        await verify(store, f"{c.wire}:{other[0]}", now=NOW, network=NET)
    assert reason(e) == "replayed"


async def test_concurrent_spends_only_one_wins() -> None:
    """Of many concurrent verifications of one solution exactly one succeeds."""
    store, c = MemoryStore(), make(bits=4)
    value = solution(c)
    results = await asyncio.gather(
        *(verify(store, value, now=NOW, network=NET) for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(r.reason == "replayed" for r in results if isinstance(r, VerificationError))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c, s: s.replace(c.mac, c.mac[:-2] + ("AA" if c.mac[-2:] != "AA" else "BB")), "bad_mac"),
        (lambda c, s: s.replace("pz1.k1.", "pz1.k9."), "unknown_key"),
        (lambda c, s: s.replace("pz1.k1.", "pz1.k0."), "bad_mac"),
        (lambda c, s: s.replace(".", "!", 1), "malformed"),
        (lambda c, s: s.split(":")[0], "malformed"),
        (lambda c, s: s + ",7", "insufficient_work"),
        (lambda c, s: s[: s.index(":") + 1] + "x y", "malformed"),
    ],
)
def test_tampering_is_rejected(mutate, expected) -> None:  # type: ignore[no-untyped-def]
    """Any change to the challenge or solution fails with a specific reason."""
    c = make(bits=4)
    with pytest.raises(VerificationError) as e:
        wire, nonces = puzzle.parse_solution(mutate(c, solution(c)))
        puzzle.check(KEYS, wire, nonces, now=NOW, network=NET)
    assert reason(e) == expected


def test_payload_tamper_breaks_mac() -> None:
    """Re-encoding the payload with more lenient fields is caught by the MAC."""
    c = make(bits=20)
    import base64
    import json

    _, kid, payload, mac = c.wire.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["b"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(VerificationError) as e:
        puzzle.check(KEYS, f"pz1.{kid}.{forged}.{mac}", ("0",), now=NOW, network=NET)
    assert reason(e) == "bad_mac"


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"now": NOW + 300}, "expired"),
        ({"now": NOW + 10_000}, "expired"),
        ({"network": "198.51.100.0/24"}, "wrong_network"),
        ({"client_ip": "203.0.114.1"}, "wrong_network"),
        ({"client_ip": "2001:db8::1"}, "wrong_network"),
        ({"scope": "admin"}, "wrong_resource"),
        ({"min_bits": 9}, "insufficient_work"),
    ],
)
def test_binding_checks(kwargs, expected) -> None:  # type: ignore[no-untyped-def]
    """Expiry, network prefix, scope and the route's floor are all enforced."""
    c = make(bits=8)
    wire, nonces = puzzle.parse_solution(solution(c))
    args = {"now": NOW + 1, "network": NET, **kwargs}
    with pytest.raises(VerificationError) as e:
        puzzle.check(KEYS, wire, nonces, **args)  # type: ignore[arg-type]
    assert reason(e) == expected


def test_wrong_nonce_is_insufficient_work() -> None:
    """A nonce whose hash misses the target fails (16 bits: a random one almost surely does)."""
    c = make(bits=16)
    good = int(solution(c).rsplit(":", 1)[1])
    bad = next(
        str(n) for n in range(good + 1, good + 10_000) if not puzzle.work_ok(c.wire, (str(n),), 16)
    )  # the next nonce that misses
    with pytest.raises(VerificationError) as e:
        puzzle.check(KEYS, c.wire, (bad,), now=NOW, network=NET)
    assert reason(e) == "insufficient_work"


def test_same_prefix_any_address_in_it_and_ipv6_64() -> None:
    """Binding is to the /24 or /64, so another address in the prefix passes (no dual-stack loops)."""
    c = make(bits=2)
    wire, nonces = puzzle.parse_solution(solution(c))
    puzzle.check(KEYS, wire, nonces, now=NOW, client_ip="203.0.113.250")
    puzzle.check(KEYS, wire, nonces, now=NOW, client_ip="::ffff:203.0.113.9")
    c6 = make(bits=2, network=network_of("2001:db8:1:2::5"))
    w6, n6 = puzzle.parse_solution(solution(c6))
    puzzle.check(KEYS, w6, n6, now=NOW, client_ip="2001:db8:1:2:ffff::1")
    assert c6.network == "2001:db8:1:2::/64"


def test_key_rotation_old_kid_still_accepted() -> None:
    """Challenges signed with a retired (still listed) key verify; removing the key rejects them."""
    old = puzzle.PuzzleKeys({"k0": b"o" * 32}, "k0")
    c = puzzle.issue(old, network=NET, scope="api", bits=2, now=NOW)
    wire, nonces = puzzle.parse_solution(solution(c))
    puzzle.check(KEYS, wire, nonces, now=NOW, network=NET)
    with pytest.raises(VerificationError) as e:
        puzzle.check(puzzle.PuzzleKeys({"k1": b"k" * 32}, "k1"), wire, nonces, now=NOW, network=NET)
    assert reason(e) == "unknown_key"


def test_bounded_variance_subsolutions() -> None:
    """k sub-solutions each need the bits; the count must match k; order matters."""
    c = make(bits=6, subs=4)
    wire, nonces = puzzle.parse_solution(solution(c))
    assert len(nonces) == 4
    puzzle.check(KEYS, wire, nonces, now=NOW, network=NET)
    for bad in (nonces[:3], (*nonces, "1")):
        with pytest.raises(VerificationError) as e:
            puzzle.check(KEYS, wire, bad, now=NOW, network=NET)
        assert reason(e) == "insufficient_work"


def test_issue_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        puzzle.issue(KEYS, network=NET, scope="api", bits=41, now=NOW)
    with pytest.raises(ValueError):
        puzzle.issue(KEYS, network="not-a-net", scope="api", bits=4, now=NOW)
    with pytest.raises(ValueError):
        puzzle.PuzzleKeys({"k1": b"short"}, "k1")


async def test_verify_requires_binding() -> None:
    c = make(bits=1)
    with pytest.raises(ValueError):
        puzzle.verify(KEYS, solution(c), now=NOW)
