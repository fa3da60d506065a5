#!/usr/bin/env python3
"""Solve a popgate puzzle without a browser (Python 3, standard library only).

    python3 solve.py CHALLENGE BITS [SUBS]

prints ``CHALLENGE:NONCE[,NONCE...]``: paste it into the challenge page's form,
or send it as a ``PoP-Puzzle`` header. For k = SUBS sub-puzzles, nonce j makes
SHA-256(CHALLENGE + "." + j + "." + nonce) start with BITS zero bits (k = 1:
SHA-256(CHALLENGE + nonce)).
"""

import hashlib
import itertools
import sys


def nonce(prefix: str, bits: int) -> int:
    for n in itertools.count():
        digest = hashlib.sha256((prefix + str(n)).encode()).digest()
        if int.from_bytes(digest, "big") >> (256 - bits) == 0:
            return n
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not all(a.isdigit() for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    challenge, bits, subs = argv[0], int(argv[1]), int(argv[2]) if len(argv) == 3 else 1
    if not (0 <= bits <= 40 and 1 <= subs <= 16):
        print("solve.py: bits must be 0..40 and subs 1..16", file=sys.stderr)
        return 2
    prefixes = [challenge] if subs == 1 else [f"{challenge}.{j}." for j in range(subs)]
    print(challenge + ":" + ",".join(str(nonce(p, bits)) for p in prefixes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
