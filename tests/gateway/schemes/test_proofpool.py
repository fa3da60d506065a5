"""ProofPool: coalescing of identical proofs in flight, the verdict cache, the depth bound."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from popgate.gateway.errors import Overloaded
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.schemes.proofpool import ProofPool
from popgate.verifiers.groth16 import InvalidProof
from popgate.verifiers.worldid import external_nullifier, parse_result, signal_hash
from tests.gateway.schemes.worldid_support import CASES, VK_FILE

VK = json.loads(VK_FILE.read_text())


def job(signal: str = "") -> tuple[list[int], list[int]]:
    p = parse_result(CASES[0]["idkit2_result"])
    public = [
        p.merkle_root,
        p.nullifier,
        signal_hash(signal),
        external_nullifier(CASES[0]["app_id"], CASES[0]["action"]),
    ]
    return p.proof.packed(), public


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(2) as ex:
        yield ex


async def test_identical_proofs_coalesce_then_cache(executor):
    pool = ProofPool(executor, VK, workers=1, queue_limit=0, metrics=Metrics(), cache_size=2)
    proof, public = job()
    await asyncio.gather(*(pool.verify(proof, public) for _ in range(20)))
    assert pool.stats == {"pooled": 1, "cached": 0, "coalesced": 19, "refused": 0}
    await pool.verify(proof, public)
    assert pool.stats["cached"] == 1
    bad_proof, bad_public = job("x")
    with pytest.raises(InvalidProof):
        await pool.verify(bad_proof, bad_public)
    with pytest.raises(InvalidProof):  # a cached negative verdict
        await pool.verify(bad_proof, bad_public)
    assert pool.stats["pooled"] == 2 and len(pool.cache) == 2


async def test_depth_bound_refuses_with_retry_after(executor):
    pool = ProofPool(executor, VK, workers=1, queue_limit=1, metrics=Metrics())
    jobs = [job(f"s{i}") for i in range(5)]
    results = await asyncio.gather(*(pool.verify(p, q) for p, q in jobs), return_exceptions=True)
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 3 and all(r.retry_after >= 1 for r in refused)
    assert sum(isinstance(r, InvalidProof) for r in results) == 2
    assert pool.pending == 0
