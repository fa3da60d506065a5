"""Shared data for the World ID gateway tests: real fixture proofs and configs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "groth16"
VK_FILE = FIX / "semaphore_v3_local_depth20.vk.json"
CASES = json.loads((FIX / "worldid_v3_local.json").read_text())["cases"]
APP_ID = CASES[0]["app_id"]
ROOT = CASES[0]["idkit2_result"]["merkle_root"]
ENDPOINT = "/.well-known/popgate/worldid"


def worldid_toml(
    *, action: str = "verify-human", roots: str = f'source = "static"\nroots = ["{ROOT}"]', **kw: Any
) -> str:
    """A ``[worldid]`` table for the fixture's app, key and root (``kw`` adds keys)."""
    lines = [f'app_id = "{APP_ID}"', f'action = "{action}"', f'vk_file = "{VK_FILE}"', 'signal = "client"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in kw.items()]
    return "\n[worldid]\n" + "\n".join(lines) + "\n[worldid.roots]\n" + roots + "\n"


def body(i: int, form: str = "idkit2_result", **over: Any) -> dict[str, Any]:
    """The exchange body for fixture case ``i`` (``over`` replaces result fields)."""
    result = copy.deepcopy(CASES[i][form])
    result.update(over)
    return {"result": result, "signal": CASES[i]["signal"]}


async def forget_nullifiers(redis_url: str) -> None:
    """Delete spent World ID nullifiers from the shared test Redis."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        async for k in client.scan_iter(match="pg:{worldid-nullifier:*"):
            await client.delete(k)
    finally:
        await client.aclose()
