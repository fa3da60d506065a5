"""BN254 (alt_bn128) arithmetic on plain Python integers.

Layers, each a small module: :mod:`.fields` (Fp, Fp2, Fp12), :mod:`.curve`
(G1, the G2 twist, validation, compression, fixed-base tables),
:mod:`.pairing` (the fast optimal-ate multi-pairing) and :mod:`.reference`
(the same checks on py_ecc, slow and obviously right, for tests and
benchmarks).
"""

from popgate.verifiers.bn254.fields import P, R, U

__all__ = ["P", "R", "U"]
