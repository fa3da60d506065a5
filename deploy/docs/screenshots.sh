#!/bin/sh
# Re-make the challenge-page screenshots in deploy/docs/ (each state: puzzle at work, German,
# dark mode, no JavaScript, pay and credits panels, World ID widget open, World ID refusal). Needs Debian chromium
# and `make node-deps`. The browser tests write them while they check each state.
set -e
cd "$(dirname "$0")/../.."
POPGATE_SCREENSHOTS=1 .venv/bin/pytest -q tests/gateway/pipeline/test_browser_challenge.py \
  tests/gateway/pipeline/test_page_browser.py tests/gateway/pipeline/test_page_worldid.py
ls -l deploy/docs/*.png
