"""What the load-test users read from the environment (all optional).

Point the scenarios at any deployment: set ``POPGATE_LT_HOST`` (or pass
``--host``) and the credentials of the classes you want; a class whose
credentials are missing is left out of the run (``locustfile.py``).
``run_flood.py`` sets all of them for its own local stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


def _list(name: str) -> list[str]:
    return [v for v in os.environ.get(name, "").split(",") if v.strip()]


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    host: str = ""                                   # POPGATE_LT_HOST: the gateway under test
    session_tokens: list[str] = field(default_factory=list)   # human session tokens (Human)
    api_keys: list[str] = field(default_factory=list)         # prepaid API keys (PayingAgent)
    credit_accounts: list[str] = field(default_factory=list)  # their accounts, same order
    admin_url: str = ""                              # admin listener: balances for the exactly-once check
    admin_token: str = ""
    x402_key: str = ""                               # a TEST private key the x402 SDK signs with
    wba_jwk: str = ""                                # Ed25519 JWK file (with "d") of a Web Bot Auth agent
    wba_agent: str = ""                              # optional Signature-Agent URL
    idp_key: str = ""                                # PEM of a test IdP the gateway's [zklogin] trusts
    idp_issuer: str = ""
    idp_audience: str = ""
    idp_kid: str = ""
    worldid_proof: str = ""                          # JSON file: one exchange body, or a list of them
    price: int = 1000                                # atomic units the /paid route costs
    xff: bool = False                                # spread users over client networks (X-Forwarded-For)
    forge_key: str = ""                              # a key the gateway does NOT know (forged sessions)
    max_bits: int = 20                               # puzzles harder than this: the PuzzleBot gives up
    summary: str = ""                                # write the run's tallies here (JSON)
    max_fail_ratio: float = 0.01                     # gate: unexpected outcomes / requests
    max_p95_ms: float = 2000.0                       # gate: 95th percentile latency, all requests
    require_classes: bool = False                    # gate: every user class made requests

    @classmethod
    def from_env(cls) -> Settings:
        e = os.environ.get
        return cls(
            host=e("POPGATE_LT_HOST", ""), session_tokens=_list("POPGATE_LT_SESSION_TOKENS"),
            api_keys=_list("POPGATE_LT_API_KEYS"), credit_accounts=_list("POPGATE_LT_CREDIT_ACCOUNTS"),
            admin_url=e("POPGATE_LT_ADMIN_URL", ""), admin_token=e("POPGATE_LT_ADMIN_TOKEN", ""),
            x402_key=e("POPGATE_LT_X402_KEY", ""), wba_jwk=e("POPGATE_LT_WBA_JWK", ""),
            wba_agent=e("POPGATE_LT_WBA_AGENT", ""), idp_key=e("POPGATE_LT_IDP_KEY", ""),
            idp_issuer=e("POPGATE_LT_IDP_ISSUER", ""), idp_audience=e("POPGATE_LT_IDP_AUDIENCE", ""),
            idp_kid=e("POPGATE_LT_IDP_KID", ""), worldid_proof=e("POPGATE_LT_WORLDID_PROOF", ""),
            price=int(e("POPGATE_LT_PRICE", "1000")), xff=e("POPGATE_LT_XFF", "") == "1",
            forge_key=e("POPGATE_LT_FORGE_KEY", "") or os.urandom(32).hex(),
            max_bits=int(e("POPGATE_LT_MAX_BITS", "20")), summary=e("POPGATE_LT_SUMMARY", ""),
            max_fail_ratio=_float("POPGATE_LT_MAX_FAIL_RATIO", 0.01),
            max_p95_ms=_float("POPGATE_LT_MAX_P95_MS", 2000.0),
            require_classes=e("POPGATE_LT_REQUIRE_CLASSES", "") == "1")

    def worldid_bodies(self) -> list[dict[str, object]]:
        """The World ID exchange bodies in ``POPGATE_LT_WORLDID_PROOF``: the file holds one body
        (``{"result": <IDKit result>, "signal": "..."}``) or a list of them, one per nullifier.
        WorldIdHuman presents the first; Sybil replays the last (give two, or the Sybil and the
        human race for one nullifier and one of them is refused)."""
        data = json.loads(Path(self.worldid_proof).read_text(encoding="utf-8"))
        bodies = data if isinstance(data, list) else [data]
        if not bodies or not all(isinstance(b, dict) for b in bodies):
            raise ValueError(f"{self.worldid_proof}: expected a JSON object or a list of objects")
        return bodies

    def missing(self, klass: str) -> str | None:
        """Why user class ``klass`` cannot run here, or None."""
        need = {"Human": ("session_tokens", "POPGATE_LT_SESSION_TOKENS"),
                "VerifiedAgent": ("wba_jwk", "POPGATE_LT_WBA_JWK"),
                "AccountUser": ("idp_key", "POPGATE_LT_IDP_KEY"),
                "WorldIdHuman": ("worldid_proof", "POPGATE_LT_WORLDID_PROOF")}
        if klass == "PayingAgent" and not (self.api_keys or self.x402_key):
            return "neither POPGATE_LT_API_KEYS nor POPGATE_LT_X402_KEY is set"
        if klass in need:
            attr, var = need[klass]
            if not getattr(self, attr):
                return f"{var} is not set"
            if attr in ("wba_jwk", "idp_key", "worldid_proof") and not Path(getattr(self, attr)).is_file():
                return f"{var}: no such file"
        return None
