"""A claim worker as its own process (the kill -9 test kills it mid-claim).

python -m tests.support.claim_runner REDIS_URL FACILITATOR_URL OFFER_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

from popgate.gateway.payments.channels import ChannelBook
from popgate.gateway.payments.claim_signer import ClaimSigner
from popgate.gateway.payments.claims import ClaimPolicy, ClaimQueue
from popgate.gateway.payments.facilitator import FacilitatorClient
from popgate.gateway.stores import open_store
from popgate.verifiers.x402 import Requirements
from tests.support.batch import RECEIVER_AUTHORIZER_KEY


async def main(redis_url: str, fac_url: str, offer: str) -> None:
    store = open_store(redis_url, timeout=2.0)
    async with aiohttp.ClientSession() as session:
        queue = ClaimQueue(
            ChannelBook(store),
            store,
            FacilitatorClient(session, fac_url),
            Requirements.from_json(json.loads(offer)),
            ClaimPolicy(threshold=1, lease=0.3),
            ClaimSigner(RECEIVER_AUTHORIZER_KEY.encode()),
        )
        print("ready", flush=True)
        while True:
            done = await queue.run_once(time.time())
            print(json.dumps(done), flush=True)
            await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
