"""RFC 9421 verification: the RFC's own Ed25519 vector, requests signed by
Cloudflare's http-message-sig (Ed25519, ECDSA P-256), the negative table, and
property tests for the structured-field parsers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.httpsig import (
    Headers,
    Policy,
    RequestView,
    VerifiedSignature,
    VerifyingKey,
    content_digest,
    parse_signatures,
    signature_base,
    verify_message,
)
from popgate.verifiers.structured_fields import InnerList, Item, Token, serialize_inner_list

FIX = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "webbotauth" / "vectors.json").read_text()
)
NOW = FIX["now"]
PUB = {k: {n: v for n, v in jwk.items() if n != "d"} for k, jwk in FIX["keys"].items()}
SESSION_POLICY = Policy(required=('"@method"', '"@target-uri"'))

# RFC 9421 Appendix B.2 request and B.2.6 signature (test-key-ed25519)
RFC_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNye"
    "aldVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
    "Signature-Input": 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"',
    "Signature": "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu"
    "4A0w6vuQv5lIp5WPpBKRCw==:",
}
RFC_BASE = """"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")\
;created=1618884473;keyid="test-key-ed25519\""""


def rfc_view(**headers: str) -> RequestView:
    return RequestView.build(
        "POST",
        "https://example.com/foo?param=Value&Pet=dog",
        {**RFC_HEADERS, **headers},
        b'{"hello": "world"}',
    )


def key_of(name: str) -> VerifyingKey:
    return VerifyingKey.from_jwk(PUB[name])


def fixed(key: VerifyingKey) -> Any:
    async def resolve(_c: Any) -> VerifyingKey:
        return key

    return resolve


async def reason(coro: Any) -> str:
    try:
        await coro
    except VerificationError as e:
        return e.reason
    return "ok"


def test_rfc9421_b26_signature_base_and_signature() -> None:
    """Our signature base is byte-for-byte the RFC's, and the RFC signature verifies on it."""
    view = rfc_view()
    cand = parse_signatures(view.headers)[0]
    base = signature_base(view, cand.params_list)
    assert base.decode() == RFC_BASE
    key_of("rfc9421_ed25519").verify(cand.signature, base)


async def test_rfc9421_b26_via_verify_message() -> None:
    """The RFC vector through the full verifier (no expires there, so not required)."""
    pol = Policy(require_expires=False, max_age=10, digest_with_body=False)
    v = await verify_message(
        rfc_view(), resolve_key=fixed(key_of("rfc9421_ed25519")), policy=pol, now=1618884473 + 5
    )
    assert v.keyid == "test-key-ed25519" and v.alg == "ed25519"
    assert (
        await reason(
            verify_message(
                rfc_view(Date="Wed, 21 Apr 2021 02:07:55 GMT"),
                resolve_key=fixed(key_of("rfc9421_ed25519")),
                policy=pol,
                now=1618884473 + 5,
            )
        )
        == "bad_signature"
    )


@pytest.mark.parametrize("case", FIX["session"], ids=lambda c: c["name"])
async def test_session_vectors(case: dict) -> None:
    """http-message-sig signed POSTs (@method @target-uri content-digest) verify, Ed25519 and P-256."""
    key = key_of("agent") if case["name"] == "ed25519" else key_of("p256")
    view = RequestView.build(case["method"], case["url"], case["headers"], case["body"].encode())
    v = await verify_message(view, resolve_key=fixed(key), policy=SESSION_POLICY, now=NOW + 1)
    assert v.keyid == "sess-123" and v.label == "pop"


def session_view(
    name: str = "ed25519",
    *,
    body: str | None = None,
    url: str | None = None,
    method: str | None = None,
    **headers: str,
) -> RequestView:
    case = next(c for c in FIX["session"] if c["name"] == name)
    h = {**case["headers"], **headers}
    return RequestView.build(
        method or case["method"], url or case["url"], h, (case["body"] if body is None else body).encode()
    )


NEG = [
    ("body changed", dict(body='{"hello":"mallory"}'), {}, "bad_digest"),
    (
        "body and digest changed",
        dict(body="x", **{"Content-Digest": content_digest(b"x")}),
        {},
        "bad_signature",
    ),
    ("method changed", dict(method="PUT"), {}, "bad_signature"),
    ("url changed", dict(url="https://api.example.com/v1/items?page=3&q=a%20b"), {}, "bad_signature"),
    ("content-type changed", {"Content-Type": "text/plain"}, {}, "bad_signature"),
    ("stale created", {}, dict(now=NOW + 301), "expired"),
    ("expires passed", {}, dict(now=NOW + 60 + 31), "expired"),
    ("created in future", {}, dict(now=NOW - 31), "not_yet_valid"),
    ("wrong key", {}, dict(key="other"), "bad_signature"),
    ("wrong key type", {}, dict(key="p256"), "bad_algorithm"),
    ("missing @authority", {}, dict(policy=Policy(required=('"@authority"',))), "missing_component"),
    ("tag required", {}, dict(policy=Policy(tag="web-bot-auth")), "wrong_tag"),
    ("no signature", {"Signature": ""}, {}, "malformed"),
    ("unpaired label", {"Signature": "other=:AAAA:"}, {}, "malformed"),
    ("empty digest header", {"Content-Digest": ""}, {}, "bad_digest"),
    ("digest not bytes", {"Content-Digest": 'sha-256="abc"'}, {}, "malformed"),
    ("digest only unknown alg", {"Content-Digest": "md5=:AAAA:"}, {}, "bad_digest"),
]


@pytest.mark.parametrize("name,mods,opts,want", NEG, ids=[n[0] for n in NEG])
async def test_negative_table(name: str, mods: dict, opts: dict, want: str) -> None:
    """Each tampering of a Cloudflare-signed request fails with its stable reason."""
    hdrs = {k: v for k, v in mods.items() if k[0].isupper()}
    kw = {k: v for k, v in mods.items() if not k[0].isupper()}
    view = session_view(**kw, **hdrs)
    key = key_of(opts.get("key", "agent"))
    got = await reason(
        verify_message(
            view,
            resolve_key=fixed(key),
            policy=opts.get("policy", SESSION_POLICY),
            now=opts.get("now", NOW + 1),
        )
    )
    assert got == want


async def test_body_needs_digest_covered() -> None:
    """A signature over a request with a body must cover content-digest."""
    pk = ed25519.Ed25519PrivateKey.generate()
    view = sign(pk, "POST", "https://a.test/x", {}, ["@method", "@target-uri"], body=b"data")
    assert (
        await reason(
            verify_message(
                view,
                resolve_key=fixed(VerifyingKey("ed25519", pk.public_key())),
                policy=SESSION_POLICY,
                now=NOW,
            )
        )
        == "missing_component"
    )


async def verify_spending(view: RequestView, store: MemoryStore, **kw: Any) -> VerifiedSignature:
    """verify_message, then claim the nonce in ``store`` (what the gateway does)."""
    verified = await verify_message(view, **kw)
    if verified.spend is not None:
        await spend(store, verified.spend)
    return verified


async def test_replayed_nonce() -> None:
    """The same signature (same nonce) is accepted once per store."""
    store = MemoryStore()
    view = session_view()
    kw: dict[str, Any] = dict(resolve_key=fixed(key_of("agent")), policy=SESSION_POLICY, now=NOW + 1)
    assert await reason(verify_spending(view, store, **kw)) == "ok"
    assert await reason(verify_spending(view, store, **kw)) == "replayed"
    assert (
        await reason(
            verify_spending(session_view("p256"), store, **{**kw, "resolve_key": fixed(key_of("p256"))})
        )
        == "ok"
    )


# --- our own signer for cases the npm tools can't make (secp256k1, odd params) --------------


def sign(
    priv: Any,
    method: str,
    url: str,
    headers: dict[str, str],
    comps: list[str],
    *,
    body: bytes | None = None,
    label: str = "s",
    **params: Any,
) -> RequestView:
    params = {"created": NOW, "expires": NOW + 60, "keyid": "k", **params}
    il = InnerList([Item(c, {}) for c in comps], params)
    view = RequestView.build(method, url, headers, body)
    base = signature_base(view, il)
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        sig = priv.sign(base)
    else:
        r, s = decode_dss_signature(priv.sign(base, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    h = {
        **headers,
        "Signature-Input": f"{label}={serialize_inner_list(il)}",
        "Signature": f"{label}=:{base64.b64encode(sig).decode()}:",
    }
    return RequestView.build(method, url, h, body)


@pytest.mark.parametrize("curve,flag", [(ec.SECP256K1(), 1), (ec.SECP256R1(), 2)])
async def test_sui_ecdsa_keys(curve: ec.EllipticCurve, flag: int) -> None:
    """secp256k1 / secp256r1 ephemeral keys given as Sui compressed points verify."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    priv = ec.generate_private_key(curve)
    point = priv.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    key = VerifyingKey.from_sui_key(flag, point)
    view = sign(priv, "GET", "https://a.test/p?q=1", {}, ["@method", "@target-uri"])
    assert await reason(verify_message(view, resolve_key=fixed(key), policy=SESSION_POLICY, now=NOW)) == "ok"
    other = VerifyingKey.from_sui_key(
        flag,
        ec.generate_private_key(curve).public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint),
    )
    assert (
        await reason(verify_message(view, resolve_key=fixed(other), policy=SESSION_POLICY, now=NOW))
        == "bad_signature"
    )


async def test_derived_components() -> None:
    """@authority drops default ports and lowercases; @query keeps '?'; @query-param decodes."""
    pk = ed25519.Ed25519PrivateKey.generate()
    view = sign(
        pk,
        "GET",
        "https://EXAMPLE.com:443/p/a?x=1&y=a%20b",
        {},
        ["@authority", "@scheme", "@path", "@query", "@request-target", "@method"],
    )
    base = signature_base(view, parse_signatures(view.headers)[0].params_list).decode()
    assert '"@authority": example.com\n"@scheme": https\n"@path": /p/a\n"@query": ?x=1&y=a%20b\n' in base
    assert '"@request-target": /p/a?x=1&y=a%20b' in base
    il = InnerList([Item("@query-param", {"name": "y"})], {})
    assert '"@query-param";name="y": a%20b' in signature_base(view, il).decode()


@pytest.mark.parametrize(
    "comps,want",
    [
        (["@method", "@method"], "malformed"),
        (["X-Up"], "malformed"),
        (["x-absent"], "missing_component"),
        (["@status"], "malformed"),
        (["@bogus"], "malformed"),
    ],
)
async def test_bad_components(comps: list[str], want: str) -> None:
    """Duplicate, uppercase, absent, response-only or unknown components are refused."""
    pk = ed25519.Ed25519PrivateKey.generate()
    il = InnerList([Item(c, {}) for c in comps], {"created": NOW, "keyid": "k"})
    view = RequestView.build("GET", "https://a.test/", {})
    with pytest.raises(VerificationError) as e:
        signature_base(view, il)
    assert e.value.reason == want
    del pk


def test_header_values_trimmed_and_joined() -> None:
    """Repeated headers join with ', ' after trimming (RFC 9421 §2.1)."""
    view = RequestView.build("GET", "https://a.test/", [("X-A", "  one "), ("x-a", "two\t")])
    il = InnerList([Item("x-a", {})], {})
    assert signature_base(view, il).decode().startswith('"x-a": one, two\n')


def test_headers_case_insensitive() -> None:
    h = Headers({"Content-Type": "a"})
    assert h.get("content-type") == h.get("CONTENT-TYPE") == "a" and "CoNtEnT-tYpE" in h


# --- property tests on the header parsers ---------------------------------------------------


@given(st.text(max_size=200), st.text(max_size=200))
def test_parse_signatures_only_raises_verification_error(si: str, sg: str) -> None:
    """Arbitrary Signature-Input/Signature text never raises anything but VerificationError."""
    try:
        parse_signatures(Headers({"Signature-Input": si, "Signature": sg}))
    except VerificationError:
        pass


ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
BARE = (
    st.integers(-(10**15) + 1, 10**15 - 1)
    | ASCII
    | st.binary(max_size=20)
    | st.booleans()
    | st.from_regex(r"[a-z*][a-z0-9:/!#$%&'*+.^_`|~-]{0,8}", fullmatch=True).map(Token)
)
KEYS = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,6}", fullmatch=True)
PARAMS = st.dictionaries(KEYS, BARE, max_size=4)


@given(st.lists(st.tuples(ASCII, PARAMS), max_size=5), PARAMS, st.binary(min_size=1, max_size=80))
def test_signature_input_roundtrip(items: list, params: dict, sig: bytes) -> None:
    """A serialized inner list parses back to the same components and parameters."""
    il = InnerList([Item(v, p) for v, p in items], params)
    hdrs = Headers(
        {
            "Signature-Input": "lab=" + serialize_inner_list(il),
            "Signature": "lab=:" + base64.b64encode(sig).decode() + ":",
        }
    )
    cand = parse_signatures(hdrs)[0]
    assert cand.signature == sig
    assert cand.params_list == il
    assert serialize_inner_list(cand.params_list) == serialize_inner_list(il)


async def test_from_aiohttp_request() -> None:
    """A real aiohttp request (loopback) yields the view a client signed: Ed25519 over
    @method @target-uri @authority content-digest, verified inside the handler."""
    import aiohttp
    from aiohttp import web

    from tests.support.servers import serve_app

    pk = ed25519.Ed25519PrivateKey.generate()
    key = VerifyingKey("ed25519", pk.public_key())
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        view = RequestView.from_aiohttp(request, await request.read())
        seen.append(
            await reason(verify_message(view, resolve_key=fixed(key), policy=SESSION_POLICY, now=NOW))
        )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as port:
        url = f"http://127.0.0.1:{port}/a%2Fb/c?x=1&y=%20"
        body = b'{"n": 1}'
        signed = sign(
            pk,
            "POST",
            url,
            {"Content-Digest": content_digest(body)},
            ["@method", "@target-uri", "@authority", "content-digest"],
            body=body,
        )
        hdrs = {k: signed.headers.get(k) for k in ("Content-Digest", "Signature-Input", "Signature")}
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=body, headers=hdrs) as r:
                assert r.status == 200
            async with s.post(url, data=body + b" ", headers=hdrs) as r:
                assert r.status == 200
    assert seen == ["ok", "bad_digest"]


def test_nonce_kept_only_while_the_signature_is_accepted() -> None:
    """A 24 h signature in a 300 s window: its nonce is kept about 300 s, not a day
    (a signature older than the window is refused anyway, so the store holds less)."""
    from popgate.verifiers.httpsig import nonce_spend

    policy = Policy(max_age=300.0, clock_skew=30.0)
    assert nonce_spend("k", "n", 1000, 1000 + 86400, policy, 1000.0).ttl == 330.0
    assert nonce_spend("k", "n", 1000, 1060, policy, 1000.0).ttl == 90.0
    assert nonce_spend("k", "n", 1000, None, policy, 1100.0).ttl == 230.0
