"""Session tokens: issue, verify, expiry, tampering, key ids, rotation, fuzzing."""

from __future__ import annotations

import base64
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.session import (
    VERIFIED_MAX,
    InvalidSession,
    SessionCodec,
    SessionExpired,
    keyed_subject,
)

K1, K2 = b"1" * 32, b"2" * 32
NOW = 1_800_000_000


def codec(signing: str = "k1", **keys: bytes) -> SessionCodec:
    return SessionCodec(keys or {"k1": K1}, signing)


def test_valid_token_round_trips():
    """An issued token verifies to the same class, subject, scope and expiry."""
    c = codec()
    token = c.issue(klass="human", subject="human:x", now=NOW, ttl=60, scope="/api/", evidence="worldid")
    s = c.verify(token, NOW + 59)
    assert (s.klass, s.subject, s.scope, s.evidence, s.expires) == (
        "human",
        "human:x",
        "/api/",
        "worldid",
        NOW + 60,
    )


def test_expired_token_rejected():
    """At and after expiry the token is refused with session_expired."""
    c = codec()
    token = c.issue(klass="human", subject="s", now=NOW, ttl=60)
    with pytest.raises(SessionExpired) as exc:
        c.verify(token, NOW + 60)
    assert exc.value.reason == "session_expired"


@pytest.mark.parametrize("part", [2, 3])
def test_tampered_token_rejected(part):
    """Changing the payload (e.g. class) or the MAC invalidates the token."""
    c = codec()
    token = c.issue(klass="agent", subject="s", now=NOW, ttl=60)
    pieces = token.split(".")
    if part == 2:
        claims = json.loads(base64.urlsafe_b64decode(pieces[2] + "=="))
        claims["c"] = "human"
        pieces[2] = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    else:
        pieces[3] = pieces[3][:-2] + ("AA" if pieces[3][-2:] != "AA" else "BB")
    with pytest.raises(InvalidSession) as exc:
        c.verify(".".join(pieces), NOW)
    assert exc.value.reason == "invalid_session"


def test_unknown_key_id_rejected():
    """A token naming a key id we do not hold is refused."""
    other = SessionCodec({"k9": K1}, "k9")
    token = other.issue(klass="human", subject="s", now=NOW, ttl=60)
    with pytest.raises(InvalidSession):
        codec().verify(token, NOW)


def test_same_kid_different_secret_rejected():
    """Same key id, different secret (a forger guessing the kid): refused."""
    forged = SessionCodec({"k1": K2}, "k1").issue(klass="human", subject="s", now=NOW, ttl=60)
    with pytest.raises(InvalidSession):
        codec().verify(forged, NOW)


def test_rotation_old_tokens_still_accepted():
    """After rotating the signing key, tokens of the previous key still verify; new ones use the new kid."""
    old = SessionCodec({"k1": K1}, "k1").issue(klass="human", subject="s", now=NOW, ttl=60)
    rotated = SessionCodec({"k1": K1, "k2": K2}, "k2")
    assert rotated.verify(old, NOW).subject == "s"
    new = rotated.issue(klass="human", subject="t", now=NOW, ttl=60)
    assert new.split(".")[1] == "k2"
    with pytest.raises(InvalidSession):
        SessionCodec({"k2": K2}, "k2").verify(old, NOW)  # k1 retired


def test_scope_coverage():
    """A scoped session covers its prefix only, on segment boundaries."""
    s = codec().verify(codec().issue(klass="human", subject="s", now=NOW, ttl=9, scope="/api"), NOW)
    assert s.covers("/api") and s.covers("/api/x")
    assert not s.covers("/apix") and not s.covers("/admin")


def test_keyed_subject_is_stable_pseudonym():
    """Same identifier, same pseudonym; it never contains the identifier."""
    a = keyed_subject(K1, "human", "0xabc123")
    assert a == keyed_subject(K1, "human", "0xabc123")
    assert a != keyed_subject(K2, "human", "0xabc123")
    assert "abc123" not in a


def test_unknown_class_cannot_be_issued():
    with pytest.raises(ValueError):
        codec().issue(klass="admin", subject="s", now=NOW, ttl=1)


@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_verification_error(text):
    """Fuzz: any string is either a valid session or a VerificationError — never another exception."""
    try:
        codec().verify(text, NOW)
    except VerificationError:
        pass


@given(st.lists(st.text(alphabet="ABCabc0123-_=+/.", max_size=40), min_size=4, max_size=4))
def test_four_part_garbage_rejected(parts):
    """Fuzz: structurally plausible tokens with garbage parts are refused cleanly."""
    token = ".".join(["v1", "k1", *parts[2:]])
    with pytest.raises(VerificationError):
        codec().verify(token, NOW)


def test_remembered_token_still_expires():
    """A token verified once (now remembered) is still refused at and after its expiry."""
    c = codec()
    token = c.issue(klass="human", subject="s", now=NOW, ttl=60)
    assert c.verify(token, NOW).subject == "s"
    assert c.verify(token, NOW + 59).subject == "s", "remembered: the same answer before expiry"
    for later in (NOW + 60, NOW + 61, NOW + 10_000):
        with pytest.raises(SessionExpired):
            c.verify(token, later)


def test_expired_token_first_seen_late_is_refused_then_too():
    """Verified for the first time after its expiry: refused, and refused again (memory or not)."""
    c = codec()
    token = c.issue(klass="human", subject="s", now=NOW, ttl=60)
    for _ in range(2):
        with pytest.raises(SessionExpired):
            c.verify(token, NOW + 61)


def test_tampered_token_is_never_remembered():
    """A token that fails its MAC is refused every time, however often it is shown, and a good
    token remembered first does not make a tampered copy of it pass."""
    c = codec()
    good = c.issue(klass="agent", subject="s", now=NOW, ttl=60)
    c.verify(good, NOW)
    pieces = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(pieces[2] + "=="))
    claims["c"] = "human"
    pieces[2] = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = ".".join(pieces)
    bad_mac = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for token in (tampered, bad_mac, good + "x", "v1.k1.e30.AAAA"):
        for _ in range(3):
            with pytest.raises(InvalidSession):
                c.verify(token, NOW)
    assert c.verify(good, NOW).klass == "agent"
    assert set(c._verified) == {good}


def test_malformed_claims_under_a_good_mac_are_never_remembered():
    """A valid MAC over claims that are not a session (a leaked key, our own bug) is refused each time."""
    c = codec()
    payload = base64.urlsafe_b64encode(b'{"c":"human"}').rstrip(b"=").decode()
    signed = f"v1.k1.{payload}"
    mac = base64.urlsafe_b64encode(hmac.digest(K1, signed.encode(), "sha256")).rstrip(b"=").decode()
    for _ in range(2):
        with pytest.raises(VerificationError):
            c.verify(f"{signed}.{mac}", NOW)
    assert c._verified == {}


def test_verified_memory_is_bounded():
    """However many distinct good tokens are shown, the memory holds at most VERIFIED_MAX,
    and every token still verifies (and still expires) after it starts over."""
    c = codec()
    tokens = [c.issue(klass="human", subject=f"s{i}", now=NOW, ttl=60) for i in range(VERIFIED_MAX + 10)]
    for i, token in enumerate(tokens):
        assert c.verify(token, NOW).subject == f"s{i}"
        assert len(c._verified) <= VERIFIED_MAX
    assert c.verify(tokens[0], NOW).subject == "s0"
    with pytest.raises(SessionExpired):
        c.verify(tokens[-1], NOW + 60)
