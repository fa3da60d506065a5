"""DNS wire format: queries, answers, and hostile bytes (verifiers/dns.py)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers import dns


def answer(qid: int, name: str, qtype: int, records: list[tuple[bytes, int, bytes]], rcode: int = 0) -> bytes:
    """A response to ``query(qid, name, qtype)`` with (owner, type, rdata) records."""
    head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(records), 0, 0)
    body = dns.encode_name(name) + struct.pack("!HH", qtype, 1)
    for owner, rtype, rdata in records:
        body += owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata
    return head + body


def test_query_shape():
    """A query is one question, recursion desired, the name in labels."""
    q = dns.query(0x1234, "crawl-1.googlebot.com", dns.A)
    assert q[:4] == b"\x12\x34\x01\x00"
    assert b"\x07crawl-1\x09googlebot\x03com\x00" in q
    assert q.endswith(b"\x00\x01\x00\x01")


def test_ptr_answer_with_compression():
    """A PTR answer whose owner is a pointer to the question parses to the target name."""
    name = ipaddress.ip_address("66.249.66.1").reverse_pointer
    msg = answer(
        7, name, dns.PTR, [(b"\xc0\x0c", dns.PTR, dns.encode_name("crawl-66-249-66-1.googlebot.com"))]
    )
    assert dns.parse_answer(msg, 7, name, dns.PTR) == (["crawl-66-249-66-1.googlebot.com"], 300)


def test_cname_chain_is_followed_and_other_names_ignored():
    """Addresses of a CNAME target count; records for unrelated owners do not."""
    msg = answer(
        9,
        "a.test",
        dns.A,
        [
            (dns.encode_name("a.test"), dns.CNAME, dns.encode_name("b.test")),
            (dns.encode_name("b.test"), dns.A, bytes([192, 0, 2, 1])),
            (dns.encode_name("evil.test"), dns.A, bytes([192, 0, 2, 66])),
        ],
    )
    assert dns.parse_answer(msg, 9, "a.test", dns.A)[0] == ["192.0.2.1"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m[:1] + b"\x00" + m[2:],  # another id
        lambda m: m[:2] + b"\x01\x00" + m[4:],  # not a response
        lambda m: m[:2] + b"\x83\x80" + m[4:],  # truncated (TC)
        lambda m: m[:3] + bytes([m[3] | 2]) + m[4:],  # SERVFAIL
        lambda m: m[:-3],  # cut short
    ],
)
def test_unusable_answers_raise(mutate):
    """Another id, a query, a truncated answer, a server error or a short message: DnsError."""
    msg = answer(5, "a.test", dns.A, [(b"\xc0\x0c", dns.A, bytes([192, 0, 2, 1]))])
    with pytest.raises(dns.DnsError):
        dns.parse_answer(mutate(msg), 5, "a.test", dns.A)


def test_nxdomain_is_no_answer():
    assert dns.parse_answer(answer(3, "no.test", dns.A, [], rcode=3), 3, "no.test", dns.A) == ([], 0)


def test_compression_loop_is_refused():
    """A pointer to itself is a bounded error, not a hang."""
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"
    with pytest.raises(dns.DnsError):
        dns.read_name(msg, 12)


def test_bad_names_are_not_queried():
    for bad in ("a..b", "x" * 64 + ".test", ".".join(["abcdefgh"] * 40), "bücher.test"):
        with pytest.raises(dns.DnsError):
            dns.encode_name(bad)


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data):
    """Any bytes: an answer list or DnsError, nothing else."""
    try:
        dns.parse_answer(data, 1, "a.test", dns.A)
    except dns.DnsError:
        pass


@given(st.integers(0, 0xFFFF), st.binary(min_size=12, max_size=300))
def test_mutated_answers_never_crash(qid, tail):
    """A valid header and question followed by arbitrary records: parsed or DnsError."""
    msg = answer(qid, "a.test", dns.PTR, [])
    msg = msg[:6] + b"\x00\x03" + msg[8:] + tail
    try:
        dns.parse_answer(msg, qid, "a.test", dns.PTR)
    except dns.DnsError:
        pass
