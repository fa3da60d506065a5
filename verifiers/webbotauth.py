"""Web Bot Auth: RFC 9421 request signatures by declared agents.

A request carries ``Signature-Input`` (``tag="web-bot-auth"``, ``keyid`` = the
RFC 7638 JWK thumbprint of an Ed25519 key, ``created``/``expires``, usually a
``nonce``), ``Signature`` and optionally ``Signature-Agent``: the legacy
sf-string form (``"https://agent.example"``) or the dictionary form
(``agent1="https://agent.example"``, covered as
``"signature-agent";key="agent1"``). A ``Signature-Agent`` must be covered.

Keys come from static config (keyid -> key, optional operator name) or from the
agent's key directory ``<agent>/.well-known/http-message-signatures-directory``,
fetched with an injected aiohttp session, cached (``Cache-Control: max-age``),
and trusted key by key: a directory key counts only with a valid
``tag="http-message-signatures-directory"`` signature over ``"@authority";req``
made by that key.

The attested subject is the agent operator: the Signature-Agent authority, or
the configured operator of a static key. Errors: VerificationError with the
:mod:`verifiers.httpsig` reasons plus ``unknown_kid``, ``bad_agent``. A nonce
is not spent here: the attestation's ``spend`` is the caller's to claim.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import (
    Candidate,
    Headers,
    Policy,
    RequestView,
    ResponseView,
    VerifyingKey,
    jwk_thumbprint,
    parse_signatures,
    verify_candidate,
    verify_message,
)
from popgate.verifiers.spend import Spend
from popgate.verifiers.structured_fields import Item, Token, parse_dictionary, parse_item

__all__ = [
    "DIRECTORY_PATH",
    "TAG",
    "KeyDirectory",
    "StaticKey",
    "WebBotAuthAttestation",
    "WebBotAuthVerifier",
    "agent_origin",
    "parse_signature_agent",
    "request_policy",
    "static_keys_from_jwks",
]

TAG = "web-bot-auth"
DIRECTORY_TAG = "http-message-signatures-directory"
DIRECTORY_PATH = "/.well-known/http-message-signatures-directory"
DIRECTORY_MEDIA = "application/http-message-signatures-directory+json"
# The draft: a request signature covers the target, "@authority" or "@target-uri"
# (at least one), and lives at most 24 hours (expires - created).
TARGET_COMPONENTS = ('"@authority"', '"@target-uri"')
MAX_VALIDITY = 24 * 3600.0
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d{1,10})", re.IGNORECASE)
_MAX_DIRECTORY = 64 * 1024


def parse_signature_agent(value: str) -> dict[str, str]:
    """Map member name -> agent URI; the legacy sf-string form gives ``{"": uri}``.
    Raises Malformed."""
    try:
        item = parse_item(value)
        if isinstance(item.value, str) and not isinstance(item.value, Token):
            return {"": item.value}
    except Malformed:
        pass
    out = {}
    for name, member in parse_dictionary(value).items():
        if not isinstance(member, Item) or not isinstance(member.value, str):
            raise Malformed(detail="Signature-Agent member is not a string")
        out[name] = member.value
    if not out:
        raise Malformed(detail="empty Signature-Agent")
    return out


def agent_origin(uri: str, *, allow_insecure: bool = False) -> str:
    """``scheme://host[:port]`` of an agent URI; raises VerificationError(bad_agent)."""
    parts = urlsplit(uri)
    if parts.scheme not in (("https", "http") if allow_insecure else ("https",)) or not parts.hostname:
        raise VerificationError("bad_agent", f"agent {uri!r} is not an https URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise VerificationError("bad_agent", "agent URL has credentials, query or fragment")
    host = parts.hostname.lower()
    if not allow_insecure and (host == "localhost" or host.replace(".", "").isdigit() or ":" in host):
        raise VerificationError("bad_agent", "agent host is local or an IP literal")
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class StaticKey:
    key: VerifyingKey
    operator: str | None = None


def static_keys_from_jwks(jwks: Mapping[str, Any], operator: str | None = None) -> dict[str, StaticKey]:
    """keyid (thumbprint) -> StaticKey for each usable key; raises Malformed."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise Malformed(detail="JWKS has no keys array")
    out = {}
    for jwk in keys:
        if isinstance(jwk, Mapping):
            try:
                out[jwk_thumbprint(jwk)] = StaticKey(VerifyingKey.from_jwk(jwk), operator)
            except Malformed:
                continue
    return out


@dataclass(frozen=True)
class WebBotAuthAttestation:
    subject: str  # the agent operator (Signature-Agent authority or configured name)
    keyid: str
    agent: str | None  # the agent origin when a Signature-Agent was used
    label: str
    created: int
    expires: int | None
    components: tuple[str, ...] = ()  # covered components, serialized ('"@authority"', ...)
    nonce: str | None = None
    spend: Spend | None = None  # the nonce: the caller claims it once when present

    def covers(self, header: str) -> bool:
        """Is request header ``header`` covered by the signature?"""
        return f'"{header.lower()}"' in self.components


@dataclass
class _Dir:
    keys: dict[str, VerifyingKey]
    expires: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KeyDirectory:
    """Fetches and caches agents' signed key directories."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allow_insecure: bool = False,
        default_ttl: float = 3600.0,
        min_ttl: float = 60.0,
        max_ttl: float = 86400.0,
        failure_ttl: float = 60.0,
        max_agents: int = 1024,
        timeout: float = 5.0,
    ) -> None:
        self._session, self.allow_insecure = session, allow_insecure
        self._ttl = (default_ttl, min_ttl, max_ttl, failure_ttl)
        self._max_agents, self._timeout = max_agents, aiohttp.ClientTimeout(total=timeout)
        self._cache: OrderedDict[str, _Dir] = OrderedDict()
        self.fetches = 0

    async def key(self, origin: str, keyid: str, now: float) -> VerifyingKey:
        """The key ``keyid`` from ``origin``'s directory; raises VerificationError(unknown_kid)."""
        entry = self._cache.get(origin)
        if entry is None:
            entry = self._cache[origin] = _Dir({}, float("-inf"))
            while len(self._cache) > self._max_agents:
                self._cache.popitem(last=False)
        self._cache.move_to_end(origin)
        async with entry.lock:
            if now >= entry.expires:
                await self._refresh(origin, entry, now)
        key = entry.keys.get(keyid)
        if key is None:
            raise VerificationError("unknown_kid", f"{keyid} not in {origin} directory")
        return key

    async def _refresh(self, origin: str, entry: _Dir, now: float) -> None:
        default_ttl, min_ttl, max_ttl, failure_ttl = self._ttl
        url = origin + DIRECTORY_PATH
        self.fetches += 1
        entry.expires = now + failure_ttl  # until proven otherwise (negative cache)
        try:
            async with self._session.get(
                url, timeout=self._timeout, allow_redirects=False, headers={"Accept": DIRECTORY_MEDIA}
            ) as resp:
                if resp.status != 200:
                    return
                body = await resp.content.read(_MAX_DIRECTORY + 1)
                headers = Headers(list(resp.headers.items()))
            if len(body) > _MAX_DIRECTORY:
                return
            keys = self.verify_directory(url, headers, body, now)
        except (TimeoutError, aiohttp.ClientError, ValueError, VerificationError):
            return
        m = _MAX_AGE.search(headers.get("cache-control") or "")
        ttl = min(max(float(m.group(1)) if m else default_ttl, min_ttl), max_ttl)
        entry.keys, entry.expires = keys, now + ttl

    @staticmethod
    def verify_directory(url: str, headers: Headers, body: bytes, now: float) -> dict[str, VerifyingKey]:
        """Keys of a directory response that each carry a valid binding signature.

        Raises VerificationError/ValueError when the response is unusable.
        """
        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise Malformed(detail="directory has no keys array")
        offered: dict[str, VerifyingKey] = {}
        for jwk in data["keys"]:
            try:
                offered[jwk_thumbprint(jwk)] = VerifyingKey.from_jwk(jwk)
            except (Malformed, AttributeError):
                continue
        view = ResponseView(200, headers, RequestView.build("GET", url, {}), body)
        policy = Policy(
            required=('"@authority";req',),
            digest_with_body=False,
            tag=DIRECTORY_TAG,
            algorithms=frozenset({"ed25519"}),
            max_age=7 * 86400,
            max_validity=7 * 86400,
        )
        good: dict[str, VerifyingKey] = {}
        for cand in parse_signatures(headers):
            kid = cand.param("keyid")
            if isinstance(kid, str) and kid in offered and kid not in good:
                try:
                    verify_candidate(view, cand, offered[kid], policy, now)
                except VerificationError:
                    continue
                good[kid] = offered[kid]
        return good


def request_policy(*, window: float = 300.0, clock_skew: float = 30.0, require_nonce: bool = False) -> Policy:
    """The one rule for a Web Bot Auth request signature, the gateway's and
    ``popgate verify webbotauth``'s: tag ``web-bot-auth``, Ed25519, covering
    ``@authority`` or ``@target-uri``; ``expires - created`` at most 24 h (the
    draft's bound); accepted until ``window`` seconds after ``created`` (or
    ``expires``, if sooner). The body is not part of it (no content-digest demanded)."""
    return Policy(
        required_any=TARGET_COMPONENTS,
        tag=TAG,
        algorithms=frozenset({"ed25519"}),
        max_age=window,
        max_validity=MAX_VALIDITY,
        clock_skew=clock_skew,
        require_nonce=require_nonce,
        digest_with_body=False,
        replay_kind="wba-nonce",
    )


class WebBotAuthVerifier:
    """Verify Web Bot Auth requests; one object per gateway, built from config."""

    def __init__(
        self,
        *,
        static: Mapping[str, StaticKey] | None = None,
        directory: KeyDirectory | None = None,
        policy: Policy | None = None,
        allow_insecure_agents: bool = False,
        allowed_agents: frozenset[str] | None = None,
    ) -> None:
        self._static = dict(static or {})
        self._allowed = allowed_agents  # agent origins whose directories we fetch (None: any)
        self._directory = directory
        self._policy = policy or request_policy()
        self._insecure = allow_insecure_agents

    def _agent(self, view: RequestView, cand: Candidate) -> str | None:
        """The agent origin this signature vouches for, if any (covered only)."""
        raw = view.headers.get("signature-agent")
        if raw is None:
            return None
        agents = parse_signature_agent(raw)
        covered = [i for i in cand.params_list.items if i.value == "signature-agent"]
        if not covered:
            raise VerificationError("missing_component", "Signature-Agent sent but not covered")
        member = covered[0].params.get("key")
        if member is None:
            if len(agents) != 1:
                raise Malformed(detail="several agents, none selected by ;key")
            member = next(iter(agents))
        uri = agents.get(str(member))
        if uri is None:
            raise VerificationError("missing_component", f"no agent member {member!r}")
        return agent_origin(uri, allow_insecure=self._insecure)

    async def verify(self, view: RequestView, *, now: float) -> WebBotAuthAttestation:
        """Verify ``view``; the attestation's ``spend`` (its nonce) is the
        caller's to claim. Raises VerificationError."""
        agent: list[str | None] = [None]

        async def resolve(cand: Candidate) -> VerifyingKey:
            agent[0] = self._agent(view, cand)
            kid = cand.param("keyid")
            static = self._static.get(kid)
            if static is not None:
                return static.key
            if agent[0] is not None and self._directory is not None:
                if self._allowed is not None and agent[0] not in self._allowed:
                    raise VerificationError("bad_agent", f"agent {agent[0]} not allowed")
                return await self._directory.key(agent[0], kid, now)
            raise VerificationError("unknown_kid", f"no key {kid!r}")

        v = await verify_message(view, resolve_key=resolve, policy=self._policy, now=now)
        static = self._static.get(v.keyid)
        origin = agent[0]
        if static is not None and static.operator:
            subject = static.operator
        elif origin is not None:
            subject = urlsplit(origin).netloc
        else:
            subject = "jwk:" + v.keyid
        return WebBotAuthAttestation(
            subject, v.keyid, origin, v.label, v.created, v.expires, tuple(v.components), v.nonce, v.spend
        )
