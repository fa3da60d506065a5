"""Benchmark: fast Groth16 verification vs the naive py_ecc check, same run.

    .venv/bin/python tests/bench/bench_groth16.py [--fast-runs 30] [--naive-runs 3]

Uses the real Semaphore v3 proof from worldcoin/world-id-contracts (4 public
inputs, PSE depth-16 key). Prints median CPU times, a per-stage breakdown of the
fast path, the per-key set-up cost and the ratio naive/fast; then the same
ratio for the real zkLogin proof (one public input, the production key) and
the cost of recomputing its public input; then World ID 3.x beside 4.0 (the
real 4.0 proof of worldcoin/world-id-protocol's verifier test, production key).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from popgate.verifiers import worldid  # noqa: E402
from popgate.verifiers.bn254 import curve  # noqa: E402
from popgate.verifiers.bn254.pairing import final_exponentiation, line_schedule, miller_loop  # noqa: E402
from popgate.verifiers.bn254.reference import verify_reference  # noqa: E402
from popgate.verifiers.groth16 import parse_proof, parse_vk, prepare_key, verify  # noqa: E402


def median_time(fn, runs: int, clock=time.process_time) -> float:  # type: ignore[no-untyped-def]
    """Median CPU time (steadier than wall time on a shared machine)."""
    times = []
    for _ in range(runs):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast-runs", type=int, default=30)
    ap.add_argument("--naive-runs", type=int, default=3)
    args = ap.parse_args()

    fx = json.loads((ROOT / "tests/fixtures/groth16/worldid_contracts_inclusion_depth16.json").read_text())
    vk_json = worldid.key("semaphore_v3", 16)
    public = [int(fx[k], 16) for k in ("root", "nullifier_hash", "signal_hash", "external_nullifier_hash")]
    proof = parse_proof({"packed": fx["packed"]})

    t = time.perf_counter()
    key = prepare_key(vk_json)
    setup = time.perf_counter() - t
    vk = parse_vk(vk_json)

    verify(key, proof, public)  # warm-up, and it must pass
    fast = median_time(lambda: verify(key, proof, public), args.fast_runs)
    fast_wall = median_time(lambda: verify(key, proof, public), args.fast_runs, time.perf_counter)
    naive = median_time(lambda: verify_reference(vk, proof, public), args.naive_runs)

    neg_c = curve.g1_neg(proof.c)
    acc = curve.g1_msm_fixed(key.vk.ic[0], key.ic_tables, public)
    b_lines = line_schedule(proof.b)
    pairs = [(proof.a, b_lines), (neg_c, key.delta_lines), (curve.g1_neg(acc), key.gamma_lines)]
    f = miller_loop(pairs)  # type: ignore[arg-type]
    stages = {
        "G2 subgroup check of B": lambda: curve.g2_in_subgroup(proof.b),
        "public-input MSM (fixed-base tables)": lambda: curve.g1_msm_fixed(
            key.vk.ic[0], key.ic_tables, public
        ),
        "line schedule of B": lambda: line_schedule(proof.b),
        "multi-Miller loop (3 pairs)": lambda: miller_loop(pairs),  # type: ignore[arg-type]
        "final exponentiation": lambda: final_exponentiation(f),
    }
    print(f"python {sys.version.split()[0]}; 4-input Semaphore v3 proof (world-id-contracts, PSE depth 16)")
    print(f"per-key set-up (prepare_key): {setup * 1e3:8.1f} ms")
    for name, fn in stages.items():
        print(f"  {name:40s} {median_time(fn, 10) * 1e3:8.2f} ms")
    print(
        f"fast verify, median CPU time of {args.fast_runs}: {fast * 1e3:8.2f} ms"
        f" (wall {fast_wall * 1e3:.2f} ms)"
    )
    print(
        f"naive py_ecc (optimized_bn128: 4 pairings + [r]B), median CPU time of {args.naive_runs}:"
        f" {naive * 1e3:8.1f} ms"
    )
    print(f"ratio naive/fast: {naive / fast:.1f}x")
    zklogin(args.fast_runs, args.naive_runs)
    worldid_v3_v4(args.fast_runs)


def worldid_v3_v4(runs: int) -> None:
    """World ID 3.x beside 4.0, same run, same clock: the whole local check of one result
    (parse, decompress, public inputs, Groth16), in process, chain facts from memory."""
    import asyncio

    from popgate.verifiers import worldid_v4 as v4

    fx = json.loads((ROOT / "tests/fixtures/groth16/worldid_contracts_inclusion_depth16.json").read_text())
    v3_key = prepare_key(worldid.key("semaphore_v3", 16))
    v3_public = [int(fx[k], 16) for k in ("root", "nullifier_hash", "signal_hash", "external_nullifier_hash")]
    real = json.loads((ROOT / "tests/fixtures/groth16/worldid_v4_verifier_test.json").read_text())
    chain, check = v4.chain_from_json(real["chain"]), v4.LocalProofCheck()
    expect = v4.Expect(
        v4.parse_rp_id(real["rp_id"]), "", int(real["nonce"], 16), real["signal"], real["now"],
        action_hash=int(real["action_hash"], 16),
    )  # fmt: skip

    def run_v3() -> None:
        verify(v3_key, parse_proof({"packed": fx["packed"]}), v3_public)

    def run_v4() -> None:
        asyncio.run(v4.check(real["item"], expect, chain, check, scope="bench"))

    run_v3()
    run_v4()  # both must pass
    loop_cost = median_time(lambda: asyncio.run(asyncio.sleep(0)), runs)
    t3, t4 = median_time(run_v3, runs), median_time(run_v4, runs) - loop_cost
    decompress = median_time(lambda: v4.proof_from_compressed(real["item"]["proof"][:4]), runs)
    print("World ID 3.x vs 4.0, one result checked locally (median CPU time, same run)")
    print(f"  3.x (Semaphore v3, 4 inputs, packed proof; world-id-contracts): {t3 * 1e3:8.2f} ms")
    print(f"  4.0 (15 inputs, compressed proof, production key; protocol test): {t4 * 1e3:8.2f} ms")
    print(f"    of which decompressing the proof: {decompress * 1e3:8.2f} ms")
    print(f"  ratio 4.0/3.x: {t4 / t3:.2f}x")


def zklogin(fast_runs: int, naive_runs: int) -> None:
    """The real Google zkLogin proof (fastcrypto's test vector) on the production key."""
    import base64

    from popgate.verifiers.zklogin_proof import all_inputs_hash, parse_submission, prod_key_json

    case = json.loads((ROOT / "tests/fixtures/zklogin/proof_vectors.json").read_text())["proofs"][0]
    sub = parse_submission({"zklogin_signature": case["zklogin_signature"]})
    n = case["jwk"]["n"]
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    eph = sub.ephemeral_key.extended

    def public() -> list[int]:
        return [all_inputs_hash(sub.inputs, eph, sub.max_epoch, modulus)]

    key, vk, pub = prepare_key(prod_key_json()), parse_vk(prod_key_json()), public()
    verify(key, sub.inputs.proof, pub)  # it must pass
    hashing = median_time(public, fast_runs)
    fast = median_time(lambda: verify(key, sub.inputs.proof, pub), fast_runs)
    naive = median_time(lambda: verify_reference(vk, sub.inputs.proof, pub), naive_runs)
    print("zkLogin proof (Sui circuit V1, production key, 1 public input; fastcrypto's Google vector)")
    print(f"  all-inputs hash (Poseidon, from the trusted parts): {hashing * 1e3:8.2f} ms")
    print(f"  fast verify, median CPU time of {fast_runs}:          {fast * 1e3:8.2f} ms")
    print(f"  naive py_ecc, median CPU time of {naive_runs}:           {naive * 1e3:8.1f} ms")
    print(f"  ratio naive/fast: {naive / fast:.1f}x")


if __name__ == "__main__":
    main()
