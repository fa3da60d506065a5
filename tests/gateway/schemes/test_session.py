"""Session tokens: issue, verify, expiry, tampering, key ids, rotation, fuzzing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.session import InvalidSession, SessionCodec, SessionExpired, keyed_subject

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
