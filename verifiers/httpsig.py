"""RFC 9421 HTTP Message Signatures: one verifier for zkLogin session requests
(signed by the ephemeral key) and Web Bot Auth (see :mod:`verifiers.webbotauth`).

Input is a neutral :class:`RequestView` (method, target URI, headers with
case-insensitive lookup, optional body), or a :class:`ResponseView` whose
``request`` answers ``;req`` components. Signature-Input / Signature are parsed
with :mod:`verifiers.structured_fields`; the ``@signature-params`` line is the
re-serialized inner list (RFC 9421 §2.3).

Supported: derived components ``@method @target-uri @authority @scheme
@request-target @path @query @query-param @status``; header fields with the
``key``, ``bs`` and ``req`` parameters (``sf``/``tr`` are refused). Algorithms
``ed25519``, ``ecdsa-p256-sha256`` and ``ecdsa-secp256k1-sha256`` (raw r||s).
RFC 9530 ``Content-Digest`` (sha-256 / sha-512) is checked against the body.

Every failure raises :class:`verifiers.errors.VerificationError` with reason
``malformed``, ``missing_component``, ``bad_algorithm``, ``expired``,
``not_yet_valid``, ``bad_digest``, ``wrong_tag``, ``unknown_kid`` or
``bad_signature``. No store here: a verified signature with a nonce carries
the :class:`~verifiers.spend.Spend` of that nonce (``pg:{<replay_kind>:
sha256(keyid NUL nonce)}``), which the caller claims once (``replayed`` when
already used).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.spend import Spend
from popgate.verifiers.structured_fields import (
    InnerList,
    Item,
    parse_dictionary,
    serialize_inner_list,
    serialize_item,
    serialize_member,
)

__all__ = [
    "Candidate",
    "Headers",
    "KeyResolver",
    "Policy",
    "RequestView",
    "ResponseView",
    "VerifiedSignature",
    "VerifyingKey",
    "check_content_digest",
    "check_params",
    "component_value",
    "content_digest",
    "jwk_thumbprint",
    "parse_signatures",
    "signature_base",
    "verify_candidate",
    "verify_message",
]


class Headers:
    """Case-insensitive, multi-valued, read-only header mapping."""

    __slots__ = ("_d",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, str]] = ()) -> None:
        d: dict[str, list[str]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        if hasattr(items, "getall") and hasattr(items, "keys"):  # multidict: keep repeats
            pairs = items.items()  # type: ignore[union-attr]
        for k, v in pairs:
            for one in v if isinstance(v, list) else [v]:
                d.setdefault(str(k).lower(), []).append(str(one))
        self._d = d

    def get_all(self, name: str) -> list[str]:
        return self._d.get(name.lower(), [])

    def get(self, name: str) -> str | None:
        vals = self.get_all(name)
        return ", ".join(vals) if vals else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d


@dataclass(frozen=True)
class RequestView:
    """What a signature can cover in a request. ``target_uri`` is absolute."""

    method: str
    target_uri: str
    headers: Headers
    body: bytes | None = None

    @classmethod
    def build(
        cls,
        method: str,
        url: str,
        headers: Mapping[str, Any] | Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> RequestView:
        return cls(method, url, headers if isinstance(headers, Headers) else Headers(headers), body)

    @classmethod
    def from_aiohttp(cls, request: Any, body: bytes | None = None, scheme: str | None = None) -> RequestView:
        """From an ``aiohttp.web.Request``: the target URI is rebuilt from the
        scheme (pass it when TLS ends in front of us), the Host header and the
        raw path+query as received."""
        uri = f"{scheme or request.scheme}://{request.host}{request.raw_path}"
        return cls(request.method, uri, Headers(list(request.headers.items())), body)


@dataclass(frozen=True)
class ResponseView:
    status: int
    headers: Headers
    request: RequestView | None = None
    body: bytes | None = None


View = RequestView | ResponseView


def _authority(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if port is None or port == default else f"{host}:{port}"


def _derived(view: View, name: str, params: Mapping[str, Any]) -> str:
    if isinstance(view, ResponseView):
        if name == "@status":
            return str(view.status)
        raise Malformed(detail=f"{name} needs ;req on a response")
    url = view.target_uri
    parts = urlsplit(url)
    if name == "@method":
        return view.method
    if name == "@target-uri":
        return url
    if name == "@authority":
        return _authority(url)
    if name == "@scheme":
        return parts.scheme.lower()
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return "?" + parts.query
    if name == "@request-target":
        return (parts.path or "/") + ("?" + parts.query if parts.query else "")
    if name == "@query-param":
        want = params.get("name")
        vals = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == want]
        if not isinstance(want, str) or len(vals) != 1:
            raise VerificationError("missing_component", "@query-param absent or repeated")
        return quote(vals[0], safe="")
    raise Malformed(detail=f"unsupported derived component {name}")


def component_value(view: View, comp: Item) -> str:
    """Resolve one covered component; raises VerificationError."""
    name, params = comp.value, comp.params
    if not isinstance(name, str) or not name or name != name.lower():
        raise Malformed(detail="component name must be a lowercase string")
    if set(params) - {"key", "bs", "req", "name"} or "sf" in params or "tr" in params:
        raise Malformed(detail="unsupported component parameter")
    if params.get("req") is True:
        if not isinstance(view, ResponseView) or view.request is None:
            raise Malformed(detail=";req outside a response")
        view = view.request
    if name.startswith("@"):
        return _derived(view, name, params)
    values = [v.strip(" \t") for v in view.headers.get_all(name)]
    if not values:
        raise VerificationError("missing_component", f"header {name} absent")
    if "key" in params:
        member_key = str(params["key"])
        member = parse_dictionary(", ".join(values)).get(member_key)
        if member is None:
            raise VerificationError("missing_component", f"{name} has no member {member_key}")
        return serialize_member(member)
    if params.get("bs") is True:
        return ", ".join(":" + base64.b64encode(v.encode("latin-1")).decode() + ":" for v in values)
    return ", ".join(values)


def signature_base(view: View, params_list: InnerList) -> bytes:
    """RFC 9421 §2.5 signature base for the covered components in ``params_list``."""
    lines, seen = [], set()
    for comp in params_list.items:
        ident = serialize_item(comp)
        if ident in seen:
            raise Malformed(detail="component covered twice")
        seen.add(ident)
        value = component_value(view, comp)
        if "\n" in value or "\r" in value:
            raise Malformed(detail="newline in component value")
        lines.append(f"{ident}: {value}")
    lines.append(f'"@signature-params": {serialize_inner_list(params_list)}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise Malformed(detail="non-ASCII signature base") from exc


# --- keys ------------------------------------------------------------------------------

_CURVES: dict[str, tuple[str, type[ec.EllipticCurve]]] = {
    "P-256": ("ecdsa-p256-sha256", ec.SECP256R1),
    "secp256k1": ("ecdsa-secp256k1-sha256", ec.SECP256K1),
}


def _b64u(data: str) -> bytes:
    if not isinstance(data, str) or "=" in data:
        raise Malformed(detail="bad base64url")
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (ValueError, TypeError) as exc:
        raise Malformed(detail="bad base64url") from exc


@dataclass(frozen=True)
class VerifyingKey:
    """A public key and the RFC 9421 algorithm it verifies."""

    alg: str
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerifyingKey:
        """OKP/Ed25519 or EC P-256/secp256k1 JWK; raises Malformed otherwise."""
        try:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                x = _b64u(jwk["x"])
                if len(x) != 32:
                    raise Malformed(detail="Ed25519 key length")
                return cls("ed25519", ed25519.Ed25519PublicKey.from_public_bytes(x))
            if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
                alg, curve = _CURVES[jwk["crv"]]
                x, y = _b64u(jwk["x"]), _b64u(jwk["y"])
                if len(x) != 32 or len(y) != 32:
                    raise Malformed(detail="EC coordinate length")
                return cls(
                    alg,
                    ec.EllipticCurvePublicNumbers(
                        int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()
                    ).public_key(),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise Malformed(detail=f"bad JWK: {exc}") from exc
        raise Malformed(detail="unsupported JWK type")

    @classmethod
    def from_sui_key(cls, flag: int, public_key: bytes) -> VerifyingKey:
        """A Sui ``flag || pk`` key (0 Ed25519, 1 secp256k1, 2 secp256r1, compressed)."""
        try:
            if flag == 0:
                return cls("ed25519", ed25519.Ed25519PublicKey.from_public_bytes(public_key))
            curve: ec.EllipticCurve = ec.SECP256K1() if flag == 1 else ec.SECP256R1()
            if flag not in (1, 2):
                raise Malformed(detail="unknown key flag")
            alg = "ecdsa-secp256k1-sha256" if flag == 1 else "ecdsa-p256-sha256"
            return cls(alg, ec.EllipticCurvePublicKey.from_encoded_point(curve, public_key))
        except ValueError as exc:
            raise Malformed(detail="bad public key") from exc

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise VerificationError(bad_signature) unless ``signature`` is valid."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
                return
            if len(signature) != 64:
                raise VerificationError("bad_signature", "ECDSA signature must be r||s")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            self.key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise VerificationError("bad_signature", "signature does not verify") from exc


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url without padding; raises Malformed."""
    members = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
    names = members.get(str(jwk.get("kty")))
    if names is None or not all(isinstance(jwk.get(n), str) for n in names):
        raise Malformed(detail="JWK lacks thumbprint members")
    canon = json.dumps({n: jwk[n] for n in names}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def content_digest(body: bytes, alg: str = "sha-256") -> str:
    """The RFC 9530 ``Content-Digest`` value for ``body``."""
    h = hashlib.sha256(body) if alg == "sha-256" else hashlib.sha512(body)
    return f"{alg}=:{base64.b64encode(h.digest()).decode()}:"


def check_content_digest(headers: Headers, body: bytes) -> None:
    """Every sha-256/sha-512 member must match ``body`` and one must exist;
    raises VerificationError(bad_digest / missing_component / malformed)."""
    raw = headers.get("content-digest")
    if raw is None:
        raise VerificationError("missing_component", "Content-Digest absent")
    found = False
    for alg, member in parse_dictionary(raw).items():
        if alg not in ("sha-256", "sha-512"):
            continue
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise Malformed(detail="Content-Digest member is not a byte sequence")
        want = (hashlib.sha256 if alg == "sha-256" else hashlib.sha512)(body).digest()
        if not hmac.compare_digest(member.value, want):
            raise VerificationError("bad_digest", f"{alg} does not match the body")
        found = True
    if not found:
        raise VerificationError("bad_digest", "no supported digest algorithm")


# --- signatures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One labelled signature as sent (untrusted until verified)."""

    label: str
    params_list: InnerList
    signature: bytes

    def param(self, name: str) -> Any:
        return self.params_list.params.get(name)

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(serialize_item(i) for i in self.params_list.items)


def parse_signatures(headers: Headers) -> list[Candidate]:
    """Pair Signature-Input and Signature members by label; raises VerificationError
    (missing_component when absent, malformed when unparseable or unpaired)."""
    si, sg = headers.get("signature-input"), headers.get("signature")
    if si is None or sg is None:
        raise VerificationError("missing_component", "Signature-Input/Signature absent")
    inputs, sigs = parse_dictionary(si), parse_dictionary(sg)
    out = []
    for label, member in inputs.items():
        sig = sigs.get(label)
        if not isinstance(member, InnerList) or sig is None:
            raise Malformed(detail=f"signature {label} not paired or not an inner list")
        if not isinstance(sig, Item) or not isinstance(sig.value, bytes):
            raise Malformed(detail=f"signature {label} is not a byte sequence")
        out.append(Candidate(label, member, sig.value))
    if not out:
        raise VerificationError("missing_component", "no signatures")
    return out


@dataclass(frozen=True)
class Policy:
    """What a verifier demands of a signature (built once from config).

    ``required`` lists component identifiers as serialized (``'"@authority"'``);
    ``digest_with_body``: a non-empty body needs ``content-digest`` covered and correct.
    """

    required: tuple[str, ...] = ()
    required_any: tuple[str, ...] = ()  # at least one of these covered (none: no such rule)
    digest_with_body: bool = True
    algorithms: frozenset[str] = frozenset({"ed25519", "ecdsa-p256-sha256", "ecdsa-secp256k1-sha256"})
    tag: str | None = None
    require_expires: bool = True
    require_nonce: bool = False
    max_age: float = 300.0
    max_validity: float = 24 * 3600.0
    clock_skew: float = 30.0
    max_nonce_len: int = 256
    replay_kind: str = "httpsig-nonce"


def bound_request_policy(
    *, window: float, clock_skew: float, require_nonce: bool, replay_kind: str
) -> Policy:
    """The rule for requests signed by a session's bound key (zkLogin accounts, delegated agents):
    ``@method`` and ``@target-uri`` covered, a body digested, ``expires`` within ``window``."""
    return Policy(
        required=('"@method"', '"@target-uri"'),
        digest_with_body=True,
        require_expires=True,
        require_nonce=require_nonce,
        max_age=window,
        max_validity=window,
        clock_skew=clock_skew,
        replay_kind=replay_kind,
    )


@dataclass(frozen=True)
class VerifiedSignature:
    label: str
    keyid: str
    alg: str
    components: tuple[str, ...]
    created: int
    expires: int | None
    nonce: str | None
    tag: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    spend: Spend | None = None  # the nonce, to claim once (None without a nonce)


def _int_param(c: Candidate, name: str) -> int | None:
    v = c.param(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise Malformed(detail=f"{name} is not an integer")
    return v


def check_params(c: Candidate, view: View, policy: Policy, now: float) -> tuple[int, int | None]:
    """Policy checks that need no key: tag, components, times, digest. Raises."""
    if policy.tag is not None and c.param("tag") != policy.tag:
        raise VerificationError("wrong_tag", f"tag {c.param('tag')!r}")
    comps = c.components
    missing = [r for r in policy.required if r not in comps]
    if policy.required_any and not any(r in comps for r in policy.required_any):
        missing.append(" or ".join(policy.required_any))
    body = getattr(view, "body", None)
    if body and policy.digest_with_body and '"content-digest"' not in comps:
        missing.append('"content-digest"')
    if missing:
        raise VerificationError("missing_component", f"not covered: {missing}")
    if not isinstance(c.param("keyid"), str):
        raise Malformed(detail="keyid missing")
    created, expires = _int_param(c, "created"), _int_param(c, "expires")
    if created is None or (expires is None and policy.require_expires):
        raise Malformed(detail="created/expires missing")
    if created > now + policy.clock_skew:
        raise VerificationError("not_yet_valid", "created in the future")
    if now - created > policy.max_age:
        raise VerificationError("expired", "created too long ago")
    if expires is not None:
        if expires <= now - policy.clock_skew:
            raise VerificationError("expired", "expires passed")
        if expires < created or expires - created > policy.max_validity:
            raise Malformed(detail="expires out of range")
    nonce = c.param("nonce")
    if nonce is not None and (not isinstance(nonce, str) or not 0 < len(nonce) <= policy.max_nonce_len):
        raise Malformed(detail="bad nonce")
    if nonce is None and policy.require_nonce:
        raise Malformed(detail="nonce missing")
    if '"content-digest"' in comps and body is not None:
        check_content_digest(view.headers, body)
    return created, expires


def verify_candidate(
    view: View, c: Candidate, key: VerifyingKey, policy: Policy, now: float
) -> VerifiedSignature:
    """Check one candidate with ``key``; no replay check (the nonce's ``spend``
    is returned). Raises VerificationError."""
    created, expires = check_params(c, view, policy, now)
    alg = c.param("alg")
    if (alg is not None and alg != key.alg) or key.alg not in policy.algorithms:
        raise VerificationError("bad_algorithm", f"alg {alg!r} vs key {key.alg}")
    key.verify(c.signature, signature_base(view, c.params_list))
    tag, nonce = c.param("tag"), c.param("nonce")
    return VerifiedSignature(
        c.label,
        c.param("keyid"),
        key.alg,
        c.components,
        created,
        expires,
        nonce,
        tag if isinstance(tag, str) else None,
        dict(c.params_list.params),
        None if nonce is None else nonce_spend(c.param("keyid"), str(nonce), created, expires, policy, now),
    )


def nonce_spend(
    keyid: str, nonce: str, created: int, expires: int | None, policy: Policy, now: float
) -> Spend:
    """The nonce of a verified signature, spent once for as long as the signature
    is accepted: until it expires or is ``max_age`` old, whichever comes first."""
    end = created + policy.max_age if expires is None else min(expires, created + policy.max_age)
    ttl = max(1.0, end - now + policy.clock_skew)
    ident = hashlib.sha256(f"{keyid}\0{nonce}".encode()).hexdigest()
    return Spend(policy.replay_kind, ident, ttl, detail="nonce already used")


KeyResolver = Callable[[Candidate], Awaitable[VerifyingKey]]


async def verify_message(
    view: View,
    *,
    resolve_key: KeyResolver,
    policy: Policy,
    now: float,
    label: str | None = None,
    keyid: str | None = None,
) -> VerifiedSignature:
    """Verify one signature: the one labelled ``label``, else the one whose
    ``keyid`` is ``keyid`` (a session binding: other signatures on the request,
    such as a Web Bot Auth one, are someone else's), else the first whose tag
    fits the policy. Its ``spend`` (when it has a nonce) is the caller's to claim.

    Only one signature is tried, so a request cannot make us verify many.
    Raises VerificationError (reasons in the module docstring).
    """
    cands = parse_signatures(view.headers)
    if label is not None:
        cands = [c for c in cands if c.label == label]
    elif keyid is not None:
        cands = [c for c in cands if _same(c.param("keyid"), keyid)]
        if not cands:
            raise VerificationError("unknown_kid", "no signature with the expected keyid")
    elif policy.tag is not None:
        cands = [c for c in cands if c.param("tag") == policy.tag] or cands
    if not cands:
        raise VerificationError("missing_component", f"no signature labelled {label!r}")
    c = cands[0]
    check_params(c, view, policy, now)  # cheap rejections before any key lookup
    key = await resolve_key(c)
    return verify_candidate(view, c, key, policy, now)


def _same(value: Any, expected: str) -> bool:
    return isinstance(value, str) and hmac.compare_digest(value.encode(), expected.encode())
