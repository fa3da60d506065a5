"""Benchmark the identity verifiers: per-JWT check (cached key), zkLogin nonce,
request-signature checks, Poseidon. Prints µs per operation and a ratio to a
baseline measured in the same run (bare PyJWT decode, bare Ed25519 verify).

Run: .venv/bin/python tests/bench/bench_identity.py [--quick]
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jwt as pyjwt  # noqa: E402

from popgate.verifiers.httpsig import (  # noqa: E402
    Policy,
    RequestView,
    VerifyingKey,
    parse_signatures,
    signature_base,
    verify_message,
)
from popgate.verifiers.jwks import JwksCache, ProviderConfig  # noqa: E402
from popgate.verifiers.oidc import OidcVerifier  # noqa: E402
from popgate.verifiers.poseidon import poseidon_hash  # noqa: E402
from popgate.verifiers.webbotauth import WebBotAuthVerifier, static_keys_from_jwks  # noqa: E402
from popgate.verifiers.zklogin import ZkLoginVerifier, compute_nonce, zklogin_address  # noqa: E402

ZK = json.loads((ROOT / "tests/fixtures/zklogin/jwt_cases.json").read_text())
WBA = json.loads((ROOT / "tests/fixtures/webbotauth/vectors.json").read_text())


def timeit(fn: Callable[[], Any], n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


async def atimeit(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    await fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


async def main(quick: bool) -> None:
    n = 200 if quick else 2000
    rows: list[tuple[str, float, str]] = []
    # baselines
    jwk = pyjwt.PyJWK(ZK["jwks"]["keys"][0], "RS256")
    tok = ZK["cases"][0]["jwt"]
    base_jwt = timeit(
        lambda: pyjwt.decode(
            tok,
            jwk.key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_aud": False},
        ),
        n,
    )
    rows.append(("baseline: bare PyJWT RS256 decode", base_jwt, "jwt"))
    agent = {k: v for k, v in WBA["keys"]["agent"].items() if k != "d"}
    vk = VerifyingKey.from_jwk(agent)
    r0 = WBA["requests"][1]
    view0 = RequestView.build(r0["method"], r0["url"], r0["headers"])
    cand = parse_signatures(view0.headers)[0]
    data = signature_base(view0, cand.params_list)
    base_ed = timeit(lambda: vk.verify(cand.signature, data), n)
    rows.append(("baseline: bare Ed25519 verify", base_ed, "ed"))

    # OIDC + zkLogin
    p = ProviderConfig(issuer=ZK["issuer"], audiences=frozenset([ZK["audience"]]), jwks=ZK["jwks"])
    oidc = OidcVerifier([p], JwksCache())
    now = ZK["now"]
    rows.append(
        ("OIDC id_token verify (cached key)", await atimeit(lambda: oidc.verify(tok, now=now), n), "jwt")
    )
    s = ZK["sessions"]["unix"]
    pk = base64.b64decode(ZK["ext_eph_pk"])
    me, rnd = int(s["max_epoch"]), int(s["randomness"])
    rows.append(
        ("zkLogin nonce (Poseidon, 4 inputs)", timeit(lambda: compute_nonce(pk, me, rnd), n // 2), "-")
    )
    zk = ZkLoginVerifier(oidc, salt=int(ZK["expected_address"]["salt"]))
    zk_key = ZkLoginVerifier(oidc, subject_key=b"k")
    rows.append(
        (
            "zkLogin session setup, keyed subject",
            await atimeit(lambda: zk_key.verify(tok, pk, me, rnd, now=now), n // 4),
            "jwt",
        )
    )
    rows.append(
        (
            "zkLogin session setup + address (warm caches)",
            await atimeit(lambda: zk.verify(tok, pk, me, rnd, now=now), n // 10),
            "jwt",
        )
    )
    counter = iter(range(10**9))
    rows.append(
        (
            "zkLogin address, new sub each time",
            timeit(
                lambda: zklogin_address(
                    salt=12345, iss=ZK["issuer"], aud=ZK["audience"], sub=str(next(counter))
                ),
                n // 10,
            ),
            "-",
        )
    )

    # request signatures
    wba = WebBotAuthVerifier(static=static_keys_from_jwks({"keys": [agent]}))
    rows.append(
        (
            "Web Bot Auth request verify (no store)",
            await atimeit(lambda: wba.verify(view0, now=WBA["now"]), n),
            "ed",
        )
    )
    sess = WBA["session"][0]
    sview = RequestView.build(sess["method"], sess["url"], sess["headers"], sess["body"].encode())

    async def resolve(_c: Any) -> VerifyingKey:
        return vk

    pol = Policy(required=('"@method"', '"@target-uri"'))
    rows.append(
        (
            "session request verify (+content-digest)",
            await atimeit(lambda: verify_message(sview, resolve_key=resolve, policy=pol, now=WBA["now"]), n),
            "ed",
        )
    )

    # Poseidon
    for k in (1, 2, 4, 8, 16, 32):
        xs = list(range(1, k + 1))
        hash_xs = functools.partial(poseidon_hash, xs)
        rows.append((f"Poseidon, {k} inputs", timeit(hash_xs, max(20, n // (4 * k))), "-"))

    rows.extend(await gateway_rows(n))

    print(f"{'operation':44} {'µs/op':>9}  ratio to baseline")
    for name, us, base in rows:
        if base == "gw":  # mocked requests are costly: report the difference to a plain session
            print(f"{name:44} {us:9.1f}  +{us - rows_gw_base(rows):.0f} µs over a plain session")
            continue
        ratio = {"jwt": us / base_jwt, "ed": us / base_ed}.get(base)
        print(f"{name:44} {us:9.1f}  {'' if ratio is None else f'{ratio:.2f}x'}")


def rows_gw_base(rows: list[tuple[str, float, str]]) -> float:
    return next(us for name, us, _ in rows if name.startswith("gateway pipeline: plain session"))


async def gateway_rows(n: int) -> list[tuple[str, float, str]]:
    """The whole pipeline (extract .. enforce, no proxying) inside a real gateway built
    from config: a plain session vs a key-bound zkLogin session with an RFC 9421
    signature (GET; POST with a 4 KiB body and Content-Digest) vs Web Bot Auth."""
    import tempfile
    from unittest import mock

    from aiohttp.streams import EmptyStreamReader, StreamReader
    from aiohttp.test_utils import make_mocked_request
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.ops.config import load_config
    from popgate.gateway.stores.memory import MemoryStore
    from popgate.verifiers.httpsig import content_digest
    from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list
    from tests.support.servers import write_config

    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-"))
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps(ZK["jwks"]))
    x = WBA["keys"]["agent"]["x"]
    extra = f"""
[policy]
default = "allow"
[zklogin]
[[zklogin.providers]]
issuer = "{ZK["issuer"]}"
audience = "{ZK["audience"]}"
jwks_file = "{jwks}"
[webbotauth]
[[webbotauth.keys]]
jwk = {{ kty = "OKP", crv = "Ed25519", x = "{x}" }}
"""
    config = load_config(write_config(tmp, "http://127.0.0.1:9", extra=extra))
    gw = build_app(config, store=MemoryStore(clock=time.time), extensions=default_extensions())
    now = time.time()
    eph = ed25519.Ed25519PrivateKey.generate()
    ext = b"\x00" + eph.public_key().public_bytes_raw()
    codec = gw.services.sessions
    plain = codec.issue(klass="account", subject="s", now=now, ttl=3600)
    bound = codec.issue(
        klass="account",
        subject="s",
        now=now,
        ttl=3600,
        evidence="zklogin",
        binding="httpsig:" + base64.urlsafe_b64encode(ext).rstrip(b"=").decode(),
    )
    keyid = codec.verify(bound, now).token_id
    loop = asyncio.get_running_loop()

    def signed(method: str, path: str, body: bytes | None) -> dict[str, str]:
        h = {"Host": "api.example", "Authorization": f"PoP {bound}"}
        comps = ["@method", "@target-uri"]
        if body is not None:
            h["Content-Digest"] = content_digest(body)
            comps.append("content-digest")
        il = InnerList(
            [Item(c, {}) for c in comps],
            {"created": int(now), "expires": int(now) + 300, "keyid": keyid, "alg": "ed25519"},
        )
        sig = eph.sign(signature_base(RequestView.build(method, "http://api.example" + path, h, body), il))
        return {
            **h,
            "Signature-Input": f"sig1={serialize_inner_list(il)}",
            "Signature": f"sig1=:{base64.b64encode(sig).decode()}:",
        }

    def request(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
        payload: Any = EmptyStreamReader()
        if body is not None:
            payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
            payload.feed_data(body)
            payload.feed_eof()
            headers = {**headers, "Content-Length": str(len(body))}
        return make_mocked_request(method, path, headers=headers, payload=payload)

    async def run(make: Callable[[], Any], want: str) -> None:
        ctx = gw.context(make())
        await gw.pipeline.run(ctx)  # type: ignore[union-attr]
        assert ctx.klass == want, (ctx.klass, ctx.rejections)

    body = b"x" * 4096
    get_h = signed("GET", "/api/items?p=2", None)
    post_h = signed("POST", "/api/items", body)
    r0 = WBA["requests"][1]
    wba_h = {**r0["headers"], "Host": "example.com"}
    out = []
    out.append(
        (
            "gateway pipeline: plain session (mock req.)",
            await atimeit(
                lambda: run(
                    lambda: request(
                        "GET", "/api/items?p=2", {"Host": "api.example", "Authorization": f"PoP {plain}"}
                    ),
                    "account",
                ),
                n,
            ),
            "-",
        )
    )
    out.append(
        (
            "gateway pipeline: bound session, signed GET",
            await atimeit(lambda: run(lambda: request("GET", "/api/items?p=2", get_h), "account"), n),
            "gw",
        )
    )
    out.append(
        (
            "gateway pipeline: bound session, POST 4 KiB",
            await atimeit(lambda: run(lambda: request("POST", "/api/items", post_h, body), "account"), n),
            "gw",
        )
    )
    gw.clock = lambda: WBA["now"] + 5
    for sch in gw.schemes:  # the fixture's nonce would be spent once: measure without the replay set
        if sch.name == "webbotauth":
            sch.verifier._store = None  # type: ignore[attr-defined]

    async def one_wba() -> None:
        await run(lambda: request("GET", "/", wba_h), "verified-agent")

    out.append(("gateway pipeline: Web Bot Auth (no replay set)", await atimeit(one_wba, n), "gw"))
    await gw.close()
    return out


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
