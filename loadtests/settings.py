"""What the load-test users read from the environment (all optional).

Point the scenarios at any deployment: pass ``--host`` (or set ``POPGATE_LT_HOST``)
and the credentials of the classes you want, as ``--pg-*`` flags or ``POPGATE_LT_*``
variables (:data:`OPTIONS`); a class whose credentials are missing is left out of the
run (``locustfile.py``). ``run_flood.py`` sets all of them for its own local stack.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every setting is an environment variable and a locust command-line flag
# (``POPGATE_LT_WORLDID_PROOF`` = ``--pg-worldid-proof``); a flag wins over the variable.
OPTIONS: dict[str, str] = {
    "POPGATE_LT_SHAPE": "load shape: staged | ramp | spike | flood | none (locust's -u/-r/-t)",
    "POPGATE_LT_DURATION": "seconds the shape runs (60)",
    "POPGATE_LT_USERS": "peak users of the shape (40)",
    "POPGATE_LT_CLASSES": "run only these user classes (comma-separated)",
    "POPGATE_LT_ONE_EACH": "1: exactly one user of every class (smoke runs)",
    "POPGATE_LT_SESSION_TOKENS": "Human: popgate session tokens (comma-separated)",
    "POPGATE_LT_API_KEYS": "PayingAgent: prepaid API keys (comma-separated)",
    "POPGATE_LT_CREDIT_ACCOUNTS": "their credit accounts, same order (for the exactly-once check)",
    "POPGATE_LT_ADMIN_URL": "popgate's admin listener (credit balances)",
    "POPGATE_LT_ADMIN_TOKEN": "its admin token (prefer the variable: flags show in ps)",
    "POPGATE_LT_X402_KEY": "PayingAgent: a TEST private key the x402 SDK signs with",
    "POPGATE_LT_PRICE": "atomic units the /paid route costs (1000)",
    "POPGATE_LT_WBA_JWK": "VerifiedAgent: Ed25519 private JWK file of a Web Bot Auth agent",
    "POPGATE_LT_WBA_AGENT": "VerifiedAgent: optional Signature-Agent URL",
    "POPGATE_LT_IDP_KEY": "AccountUser: PEM file of a test IdP your [zklogin] provider trusts",
    "POPGATE_LT_IDP_ISSUER": "AccountUser: that IdP's issuer",
    "POPGATE_LT_IDP_AUDIENCE": "AccountUser: the audience",
    "POPGATE_LT_IDP_KID": "AccountUser: the key id",
    "POPGATE_LT_WORLDID_PROOF": "WorldIdHuman, Sybil, Replayer: JSON file, one exchange body or a list",
    "POPGATE_LT_PP_ISSUER_KEY": "PrivacyPassHuman: PEM of a test issuer your [privatepass] trusts",
    "POPGATE_LT_DELEGATOR_SESSION": "DelegatedFleet: a human session token that delegates to 20 agents",
    "POPGATE_LT_DELEGATION_QUOTA": "DelegatedFleet: the gateway's [delegation] daily_quota (0: none)",
    "POPGATE_LT_XFF": "1: spread users over client networks with X-Forwarded-For",
    "POPGATE_LT_FORGE_KEY": "a key the gateway does NOT know (forged sessions; random by default)",
    "POPGATE_LT_MAX_BITS": "hardest puzzle a PuzzleBot still solves (20)",
    "POPGATE_LT_SUMMARY": "write the run's tallies here (JSON)",
    "POPGATE_LT_MAX_FAIL_RATIO": "gate: unexpected outcomes / requests (0.01)",
    "POPGATE_LT_MAX_P95_MS": "gate: p95 latency of all requests, ms (2000)",
    "POPGATE_LT_REQUIRE_CLASSES": "1: gate fails when a user class made no request",
}


def flag(env: str) -> str:
    """``POPGATE_LT_WORLDID_PROOF`` → ``--pg-worldid-proof``."""
    return "--pg-" + env.removeprefix("POPGATE_LT_").lower().replace("_", "-")


def add_options(parser: Any, **extra: Any) -> None:
    """Register the ``--pg-*`` flags on an argparse-like parser (locust's, or our own)."""
    for env, text in OPTIONS.items():
        parser.add_argument(flag(env), dest=env, default=None, help=f"{text} [env {env}]", **extra)


def apply_command_line(argv: list[str]) -> None:
    """Copy the ``--pg-*`` flags in ``argv`` into the environment, where the users, shapes
    and gate read them (they are read at import, before locust parses its own options)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_options(parser)
    known, _rest = parser.parse_known_args(argv)
    for env in OPTIONS:
        value = getattr(known, env)
        if value is not None:
            os.environ[env] = value


def _list(name: str) -> list[str]:
    return [v for v in os.environ.get(name, "").split(",") if v.strip()]


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    host: str = ""  # POPGATE_LT_HOST: the gateway under test
    session_tokens: list[str] = field(default_factory=list)  # human session tokens (Human)
    api_keys: list[str] = field(default_factory=list)  # prepaid API keys (PayingAgent)
    credit_accounts: list[str] = field(default_factory=list)  # their accounts, same order
    admin_url: str = ""  # admin listener: balances for the exactly-once check
    admin_token: str = ""
    x402_key: str = ""  # a TEST private key the x402 SDK signs with
    wba_jwk: str = ""  # Ed25519 JWK file (with "d") of a Web Bot Auth agent
    wba_agent: str = ""  # optional Signature-Agent URL
    idp_key: str = ""  # PEM of a test IdP the gateway's [zklogin] trusts
    idp_issuer: str = ""
    idp_audience: str = ""
    idp_kid: str = ""
    worldid_proof: str = ""  # JSON file: one exchange body, or a list of them
    pp_issuer_key: str = ""  # PEM of a test Privacy Pass issuer (PrivacyPassHuman)
    delegator_session: str = ""  # a human session that delegates (DelegatedFleet)
    delegation_quota: int = 0  # the gateway's [delegation] daily_quota
    price: int = 1000  # atomic units the /paid route costs
    xff: bool = False  # spread users over client networks (X-Forwarded-For)
    forge_key: str = ""  # a key the gateway does NOT know (forged sessions)
    max_bits: int = 20  # puzzles harder than this: the PuzzleBot gives up
    summary: str = ""  # write the run's tallies here (JSON)
    max_fail_ratio: float = 0.01  # gate: unexpected outcomes / requests
    max_p95_ms: float = 2000.0  # gate: 95th percentile latency, all requests
    require_classes: bool = False  # gate: every user class made requests

    @classmethod
    def from_env(cls) -> Settings:
        e = os.environ.get
        return cls(
            host=e("POPGATE_LT_HOST", ""),
            session_tokens=_list("POPGATE_LT_SESSION_TOKENS"),
            api_keys=_list("POPGATE_LT_API_KEYS"),
            credit_accounts=_list("POPGATE_LT_CREDIT_ACCOUNTS"),
            admin_url=e("POPGATE_LT_ADMIN_URL", ""),
            admin_token=e("POPGATE_LT_ADMIN_TOKEN", ""),
            x402_key=e("POPGATE_LT_X402_KEY", ""),
            wba_jwk=e("POPGATE_LT_WBA_JWK", ""),
            wba_agent=e("POPGATE_LT_WBA_AGENT", ""),
            idp_key=e("POPGATE_LT_IDP_KEY", ""),
            idp_issuer=e("POPGATE_LT_IDP_ISSUER", ""),
            idp_audience=e("POPGATE_LT_IDP_AUDIENCE", ""),
            idp_kid=e("POPGATE_LT_IDP_KID", ""),
            worldid_proof=e("POPGATE_LT_WORLDID_PROOF", ""),
            pp_issuer_key=e("POPGATE_LT_PP_ISSUER_KEY", ""),
            delegator_session=e("POPGATE_LT_DELEGATOR_SESSION", ""),
            delegation_quota=int(e("POPGATE_LT_DELEGATION_QUOTA", "0")),
            price=int(e("POPGATE_LT_PRICE", "1000")),
            xff=e("POPGATE_LT_XFF", "") == "1",
            forge_key=e("POPGATE_LT_FORGE_KEY", "") or os.urandom(32).hex(),
            max_bits=int(e("POPGATE_LT_MAX_BITS", "20")),
            summary=e("POPGATE_LT_SUMMARY", ""),
            max_fail_ratio=_float("POPGATE_LT_MAX_FAIL_RATIO", 0.01),
            max_p95_ms=_float("POPGATE_LT_MAX_P95_MS", 2000.0),
            require_classes=e("POPGATE_LT_REQUIRE_CLASSES", "") == "1",
        )

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
        need = {
            "Human": ("session_tokens", "POPGATE_LT_SESSION_TOKENS"),
            "VerifiedAgent": ("wba_jwk", "POPGATE_LT_WBA_JWK"),
            "AccountUser": ("idp_key", "POPGATE_LT_IDP_KEY"),
            "WorldIdHuman": ("worldid_proof", "POPGATE_LT_WORLDID_PROOF"),
            "PrivacyPassHuman": ("pp_issuer_key", "POPGATE_LT_PP_ISSUER_KEY"),
            "DelegatedFleet": ("delegator_session", "POPGATE_LT_DELEGATOR_SESSION"),
        }
        if klass == "PayingAgent" and not (self.api_keys or self.x402_key):
            return "neither POPGATE_LT_API_KEYS nor POPGATE_LT_X402_KEY is set"
        if klass in need:
            attr, var = need[klass]
            if not getattr(self, attr):
                return f"{var} is not set"
            if (
                attr in ("wba_jwk", "idp_key", "worldid_proof", "pp_issuer_key")
                and not Path(getattr(self, attr)).is_file()
            ):
                return f"{var}: no such file"
        return None
