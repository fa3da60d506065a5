"""A real OpenID provider for tests: oidc-provider (tests/node) run by node on loopback, and a
plain-HTTP walk through its development login and consent forms (for tests that need real
id_tokens without a browser)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import select
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp

from tests.support.node import NODE_DIR, node_binary
from tests.support.servers import free_port

SCRIPT = NODE_DIR / "scripts" / "oidc_provider.mjs"


@contextlib.contextmanager
def oidc_provider(clients: list[dict[str, Any]], port: int | None = None) -> Iterator[str]:
    """Start oidc-provider with ``clients``; yields its issuer URL; stops it (by pid) after."""
    port = port or free_port()
    # a file, not a pipe: its warnings can never block it
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [node_binary(), str(SCRIPT), str(port), json.dumps(clients)],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready and proc.stdout else ""
            if not line:
                proc.kill()
                errors.seek(0)
                raise RuntimeError(f"oidc-provider did not start: {errors.read()[-2000:]}")
            yield str(json.loads(line)["issuer"])
        finally:
            proc.terminate()
            proc.wait(10)


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _form(html: str) -> tuple[str, dict[str, str]]:
    action = re.search(r'<form[^>]*action="([^"]+)"', html)
    if action is None:
        raise AssertionError(f"no form on the provider's page: {html[:500]}")
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    return action.group(1), fields


async def id_token(
    issuer: str, client_id: str, secret: str, redirect_uri: str, nonce: str, login: str = "alice"
) -> dict[str, Any]:
    """Walk the code flow (login form, consent) over plain HTTP; returns the token response."""
    verifier = b64u(os.urandom(32))
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": "s",
        "nonce": nonce,
        "code_challenge": b64u(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        url, method, data = f"{issuer}/auth?{urlencode(params)}", "GET", None
        for _ in range(12):
            async with http.request(method, url, data=data, allow_redirects=False) as r:
                if r.status in (302, 303):
                    url, method, data = urljoin(url, r.headers["Location"]), "GET", None
                    if url.startswith(redirect_uri):
                        break
                    continue
                page = await r.text()
            action, fields = _form(page)
            if 'name="login"' in page:
                fields |= {"login": login, "password": "pw"}
            url, method, data = urljoin(url, action), "POST", fields
        code = parse_qs(urlsplit(url).query)["code"][0]
        auth = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        async with http.post(f"{issuer}/token", data=form | {"code_verifier": verifier}, headers=auth) as r:
            body: dict[str, Any] = await r.json()
            assert r.status == 200, body
            return body
