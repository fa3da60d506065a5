"""A local x402 facilitator for the flood run (simulated chain, test keys only).

    python -m loadtests.facilitator PORT

Serves ``tests/support/facilitator.py`` (``/supported``, ``/verify``,
``/settle``: signatures checked with eth-account, nonces spent once, the
SDK's response models) on 127.0.0.1:PORT, plus ``GET /stats``: how many
payments were settled and their total value (atomic units), so the report can
reconcile popgate's fee counter with what the "chain" saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.facilitator import FacilitatorState, make_app


def app() -> web.Application:
    state = FacilitatorState()
    application = make_app(state)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "settled": len(state.settled),
                "value": sum(int(s["value"]) for s in state.settled),
                "calls": dict(state.calls),
            }
        )

    application.router.add_get("/stats", stats)
    return application


if __name__ == "__main__":
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
