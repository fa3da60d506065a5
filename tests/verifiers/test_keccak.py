"""keccak256 on a reused per-thread state gives the digests a fresh hash object gives."""

from __future__ import annotations

import os
import threading

from Crypto.Hash import keccak

from popgate.verifiers.evm import keccak256


def reference(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def test_known_vectors() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"


def test_every_length_around_the_rate_and_repeated_use() -> None:
    for n in [*range(300), 1000, 5000]:
        data = os.urandom(n)
        assert keccak256(data) == reference(data) == keccak256(data)
    assert keccak256(memoryview(b"x" * 64)) == reference(b"x" * 64)


def test_threads_do_not_share_a_state() -> None:
    bad: list[bytes] = []

    def work() -> None:
        for _ in range(2000):
            data = os.urandom(97)
            if keccak256(data) != reference(data):
                bad.append(data)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
