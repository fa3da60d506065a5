"""The raw flood driver's status-line scanner: however the byte stream is cut into reads,
every response is counted once, with its status."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loadtests.raw_flood import scan

CODES = st.sampled_from(["200", "402", "429", "503"])
BODY = st.binary(max_size=60).filter(lambda b: b"HTTP/1.1 " not in b)


@given(st.lists(st.tuples(CODES, BODY), max_size=30), st.lists(st.integers(1, 50), max_size=40))
def test_scan_counts_each_status_line_once_across_any_split(responses, cuts):
    stream = b"".join(
        f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        for code, body in responses
    )
    got: list[str] = []
    tail, pos = b"", 0
    for n in [*cuts, len(stream)]:
        chunk, pos = stream[pos : pos + n], pos + n
        codes, tail = scan(tail, chunk)
        got += codes
    codes, _ = scan(tail, stream[pos:])
    got += codes
    assert got == [code for code, _ in responses]
