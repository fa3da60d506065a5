"""An agent acting for a person: get a delegation, then sign each request (RFC 9421).

```python
from cryptography.hazmat.primitives.asymmetric import ed25519
from popgate.gateway.agent import Delegated, public_jwk

key = ed25519.Ed25519PrivateKey.generate()          # the agent's own key (or ec P-256)
# the human (their popgate session) asks for the delegation, sending only the public key:
# POST /.well-known/popgate/delegate {"jwk": public_jwk(key), "scope": "/api/", "ttl": 3600}
agent = Delegated(token=answer["token"], keyid=answer["id"], key=key)
headers = agent.headers("GET", "https://api.example.com/api/things")   # then send them
```

Each request gets ``Authorization: PoP <delegation>`` and a signature over
``@method``, ``@target-uri`` (and ``content-digest`` with a body) with
``created``/``expires`` 60 s apart, ``keyid`` = the delegation id.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from popgate.verifiers.httpsig import RequestView, content_digest, signature_base
from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list

AgentKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(key: AgentKey) -> dict[str, str]:
    """The public JWK of an Ed25519 or P-256 private key (what the human sends popgate)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(key.public_key().public_bytes_raw())}
    nums = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64u(nums.x.to_bytes(32, "big")),
        "y": _b64u(nums.y.to_bytes(32, "big")),
    }


@dataclass(frozen=True)
class Delegated:
    """A delegation token, its id and the agent key it is bound to."""

    token: str
    keyid: str
    key: AgentKey

    def headers(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        created: int | None = None,
        ttl: int = 60,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """The headers that make ``method url [body]`` a request of this agent
        (``nonce``: when the gateway requires one, a fresh value per request)."""
        headers = {"Authorization": f"PoP {self.token}"}
        if body:
            headers["Content-Digest"] = content_digest(body)
        covered = ("@method", "@target-uri", *(("content-digest",) if body else ()))
        alg = "ed25519" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "ecdsa-p256-sha256"
        at = int(time.time()) if created is None else created
        params: dict[str, Any] = {"created": at, "expires": at + ttl, "keyid": self.keyid, "alg": alg}
        if nonce is not None:
            params["nonce"] = nonce
        inner = InnerList([Item(c, {}) for c in covered], params)
        base = signature_base(RequestView.build(method, url, headers, body), inner)
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            sig = self.key.sign(base)
        else:
            r, s = decode_dss_signature(self.key.sign(base, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        headers["Signature-Input"] = f"sig1={serialize_inner_list(inner)}"
        headers["Signature"] = f"sig1=:{base64.b64encode(sig).decode()}:"
        return headers
