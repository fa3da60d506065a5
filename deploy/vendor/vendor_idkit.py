#!/usr/bin/env python3
"""Vendor the IDKit standalone widget, the IDKit 4 core and a QR encoder into
gateway/static/vendor/ (no third-party CDN).

Reproducible: copies ``build/index.global.js`` and ``LICENSE`` of the pinned
``@worldcoin/idkit-standalone`` from tests/node/node_modules (``make node-deps``
installs it from the lockfile), and records in ``idkit.json`` the version, the
sha256 of both files and the CSP hash of the stylesheet the widget puts in its
shadow root (``style-src`` needs it: popgate's page allows no inline style
without a hash). ``tests/gateway/pipeline/test_vendor_idkit.py`` checks that
the committed files match this record and the npm package.

IDKit 4: ``@worldcoin/idkit-core`` 4.x ``dist/idkit.global.js`` (an IIFE setting
``window.IDKit``) and the WASM core it loads from beside itself
(``idkit_wasm_bg.wasm``); the npm package ships no licence file, so the MIT
licence of ``worldcoin/idkit`` is kept in ``deploy/vendor/idkit-core.LICENSE``
and copied. The page draws its own QR code with ``qrcode-generator``
(``dist/qrcode.js``, MIT, licence in its header). All pinned in
tests/node/package.json; their sha256 go to ``idkit.json`` (``core``, ``qrcode``).

    python3 deploy/vendor/vendor_idkit.py          # write
    python3 deploy/vendor/vendor_idkit.py --check  # compare, exit 1 on a difference
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tests" / "node" / "node_modules" / "@worldcoin" / "idkit-standalone"
OUT = ROOT / "gateway" / "static" / "vendor"
SCRIPT = "idkit-standalone.js"
LICENSE = "idkit-standalone.LICENSE"
RECORD = "idkit.json"
CORE = ROOT / "tests" / "node" / "node_modules" / "@worldcoin" / "idkit-core"
QRCODE = ROOT / "tests" / "node" / "node_modules" / "qrcode-generator"
# vendored name -> (package dir, file in it); the licence of idkit-core from deploy/vendor
EXTRA = {
    "idkit-core.js": (CORE, "dist/idkit.global.js"),
    "idkit_wasm_bg.wasm": (CORE, "dist/idkit_wasm_bg.wasm"),
    "idkit-core.LICENSE": (ROOT / "deploy" / "vendor", "idkit-core.LICENSE"),
    "qrcode.js": (QRCODE, "dist/qrcode.js"),
}
# the widget's <style> in its shadow root: a JS template literal in the bundle
_STYLES = re.compile(r"var styles_default = `(.*?)`;\n", re.S)


def widget_css(bundle: str) -> str:
    """The text of the widget's shadow-root stylesheet, as the browser sees it."""
    m = _STYLES.search(bundle)
    if m is None:
        raise SystemExit("vendor_idkit: styles_default not found in the bundle (a new IDKit build?)")
    raw = m.group(1)
    if "${" in raw:
        raise SystemExit("vendor_idkit: the widget stylesheet is no longer static")
    return re.sub(r"\\(.)", lambda e: e.group(1), raw, flags=re.S)


def csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def record() -> tuple[dict[str, object], bytes, bytes]:
    meta = json.loads((PACKAGE / "package.json").read_text())
    script = (PACKAGE / "build" / "index.global.js").read_bytes()
    lic = (PACKAGE / "LICENSE").read_bytes()
    rec = {
        "package": meta["name"],
        "version": meta["version"],
        "source": "build/index.global.js",
        "sha256": hashlib.sha256(script).hexdigest(),
        "license_sha256": hashlib.sha256(lic).hexdigest(),
        "style_hashes": [csp_hash(widget_css(script.decode()))],
        "core": _package(CORE, ["idkit-core.js", "idkit_wasm_bg.wasm", "idkit-core.LICENSE"]),
        "qrcode": _package(QRCODE, ["qrcode.js"]),
    }
    return rec, script, lic


def _package(pkg: Path, names: list[str]) -> dict[str, object]:
    meta = json.loads((pkg / "package.json").read_text())
    if meta.get("license") != "MIT":
        raise SystemExit(f"vendor_idkit: {meta['name']} is no longer MIT-licensed: check before vendoring")
    files = {n: hashlib.sha256(_extra(n)).hexdigest() for n in names}
    return {"package": meta["name"], "version": meta["version"], "license": "MIT", "sha256": files}


def _extra(name: str) -> bytes:
    pkg, rel = EXTRA[name]
    return (pkg / rel).read_bytes()


def main(argv: list[str]) -> int:
    if not PACKAGE.exists():
        print("vendor_idkit: run `make node-deps` first (tests/node/node_modules)", file=sys.stderr)
        return 2
    rec, script, lic = record()
    text = json.dumps(rec, indent=2) + "\n"
    if "--check" in argv:
        same = (
            (OUT / SCRIPT).read_bytes() == script
            and (OUT / LICENSE).read_bytes() == lic
            and (OUT / RECORD).read_text() == text
            and all((OUT / n).read_bytes() == _extra(n) for n in EXTRA)
        )
        print("vendored IDKit matches the npm package" if same else "vendored IDKit differs: re-run")
        return 0 if same else 1
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / SCRIPT).write_bytes(script)
    (OUT / LICENSE).write_bytes(lic)
    (OUT / RECORD).write_text(text)
    for name in EXTRA:
        (OUT / name).write_bytes(_extra(name))
    print(f"vendored {rec['package']} {rec['version']} sha256={rec['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
