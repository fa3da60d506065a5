"""The forward-auth listener's answer bytes (gateway/http/auth_wire.py ``encode``), read back
by llhttp (httptools' response parser): what was in the answer is what a proxy reads, and a
header that would split into two (CR or LF) is refused, never written."""

from __future__ import annotations

import httptools
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.http.auth_wire import Encoded, encode

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20)
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
OWN = {"content-length", "connection", "date", "transfer-encoding"}


class Read:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def read_back(data: bytes) -> tuple[int, Read]:
    read = Read()
    parser = httptools.HttpResponseParser(read)
    parser.feed_data(data)
    return parser.get_status_code(), read


@given(
    st.lists(st.tuples(TOKEN, VALUE), max_size=8),
    st.binary(max_size=64),
    st.sampled_from([200, 401, 403, 404]),
    st.booleans(),
)
def test_what_is_encoded_is_what_a_proxy_reads(pairs, body, status, keep_alive):
    response = web.Response(status=status, body=body, headers=[(n, v) for n, v in pairs])
    status_read, read = read_back(encode(response, keep_alive, "Thu, 03 Dec 2026 13:00:00 GMT"))
    assert status_read == status and read.done and read.body == body
    got = [(n.lower(), v) for n, v in read.headers]
    written = [(n.lower(), v) for n, v in pairs if n.lower() not in OWN]
    assert [h for h in got if h[0] not in OWN and h[0] != "content-type"] == [
        h for h in written if h[0] != "content-type"
    ]
    assert dict(got)["content-length"] == str(len(body))
    assert dict(got)["connection"] == ("keep-alive" if keep_alive else "close")


@given(TOKEN, VALUE, VALUE, st.sampled_from(["\r", "\n", "\r\n"]))
def test_a_header_with_cr_or_lf_is_refused(name, before, after, brk):
    response = web.Response(status=200, headers={"X-Ok": "1", name: before + brk + after})
    with pytest.raises(ValueError):
        encode(response, True, "Thu, 03 Dec 2026 13:00:00 GMT")


def test_a_head_answer_has_no_body_but_its_length():
    data = encode(web.Response(status=200, body=b"hello"), True, "D", head=True)
    assert data.endswith(b"Content-Length: 5\r\nConnection: keep-alive\r\n\r\n")


@given(st.dictionaries(TOKEN, VALUE, max_size=8), st.sampled_from([200, 401, 403]), st.booleans(), TOKEN)
def test_an_answer_encoded_once_is_sent_as_any_other(headers, status, keep_alive, late):
    """A repeating answer (the reused 402's 401) keeps its bytes: each copy sent is exactly
    what encoding it anew gives; a copy whose headers changed after is encoded anew."""
    headers = {n: v for n, v in headers.items() if n.lower() not in OWN}
    date = "Thu, 03 Dec 2026 13:00:00 GMT"
    once = Encoded(status=status, headers=headers).fix()
    fresh = web.Response(status=status, headers=headers)
    assert encode(once.again(), keep_alive, date) == encode(fresh, keep_alive, date)
    assert encode(once.again(), keep_alive, date, head=True) == encode(fresh, keep_alive, date, head=True)
    changed = once.again()
    changed.headers.add(f"X-Late-{late}", "1")
    fresh.headers.add(f"X-Late-{late}", "1")
    assert encode(changed, keep_alive, date) == encode(fresh, keep_alive, date)
    assert encode(once.again(), keep_alive, date) != encode(changed, keep_alive, date)
