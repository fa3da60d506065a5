"""Shared set-up for the challenge-page browser tests: a policy with a World ID
route, and a stand-in World ID bridge answered through Playwright's ``page.route``.

The bridge protocol (``@worldcoin/idkit-core`` 2.x, ``src/bridge.ts``): the widget
makes an AES-256-GCM key, POSTs its encrypted request to ``/request`` (answer
``{"request_id"}``), shows ``https://world.org/verify?t=wld&i=<id>&k=<base64 key>``
(QR code and "Open World App" link) and polls ``GET /response/<id>`` until
``{"status": "completed", "response": {"iv", "payload"}}`` where ``payload`` is
the World App's result encrypted with that key (base64 of ciphertext+tag).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.gateway.schemes.worldid_support import CASES, worldid_toml

BRIDGE = "https://bridge.worldcoin.org"
DOCS = Path(__file__).resolve().parents[3] / "deploy" / "docs"
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "content-type"}

POLICY = """
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = { kind = "challenge", ways = ["puzzle", "prove"], min_bits = 8 }
unknown = { kind = "challenge", ways = ["puzzle", "prove"], min_bits = 8 }

[[rules]]
name = "human"
path = "/human/**"
[rules.actions]
unknown = { kind = "challenge", ways = ["prove"] }
agent = { kind = "challenge", ways = ["prove"] }

[[rules]]
name = "slow"
path = "/slow/**"
[rules.actions]
unknown = { kind = "challenge", ways = ["puzzle", "prove"], min_bits = 30 }
"""


def page_extra(tmp: Any, floor: int = 10, extra: str = "") -> str:
    """Puzzle + World ID (the fixture's app, action and root) + the policy above."""
    return puzzle_extra(tmp, policy=POLICY, floor=floor, ceiling=30, extra=worldid_toml() + extra)


async def screenshot(page: Any, name: str, full_page: bool = True) -> None:
    """Save ``deploy/docs/<name>`` when ``POPGATE_SCREENSHOTS=1`` (deploy/docs/screenshots.sh sets it),
    so an ordinary test run leaves the committed pictures alone."""
    if os.environ.get("POPGATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(DOCS / name), full_page=full_page)


class Bridge:
    """Answers the widget's bridge calls with fixture case ``case``'s IDKit 2 result."""

    def __init__(self, page: Any, case: int) -> None:
        self.page, self.result = page, CASES[case]["idkit2_result"]
        self.requests: list[dict[str, Any]] = []
        self.polls = 0

    async def install(self) -> None:
        await self.page.route(BRIDGE + "/**", self.handle)

    async def handle(self, route: Any) -> None:
        req = route.request
        path = urlsplit(req.url).path
        if req.method == "OPTIONS":
            await route.fulfill(status=204, headers={**CORS, "Access-Control-Allow-Methods": "GET, POST"})
        elif req.method == "POST" and path == "/request":
            self.requests.append(json.loads(req.post_data or "{}"))
            await route.fulfill(status=200, headers=CORS, json={"request_id": str(uuid.uuid4())})
        elif req.method == "GET" and path.startswith("/response/"):
            self.polls += 1
            await route.fulfill(status=200, headers=CORS, json=await self._answer(path.rsplit("/", 1)[1]))
        else:
            await route.fulfill(status=404, headers=CORS, body="")

    async def _answer(self, request_id: str) -> dict[str, Any]:
        link = self.page.locator('a[href^="https://world.org/verify"]').first
        uri = await link.get_attribute("href")
        q = parse_qs(urlsplit(uri).query)
        assert q["i"] == [request_id], "the widget polls the request it made"
        key = base64.b64decode(q["k"][0])
        iv = os.urandom(12)
        payload = AESGCM(key).encrypt(iv, json.dumps(self.result).encode(), None)
        return {
            "status": "completed",
            "response": {"iv": base64.b64encode(iv).decode(), "payload": base64.b64encode(payload).decode()},
        }
