# popgate — the two commands: `make run` and `make test`. Both set up everything they need.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: install system-deps node-deps run test lint typecheck bench bench-deps flood flood-overload soak clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,fast]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the test suite drives for real: redis-server (store tests),
# redis-sentinel (failover tests), chromium (the browser challenge page), nginx and caddy
# (forward-auth mode behind the shipped edge configs), iproute2 (the partition test's network
# namespace). Installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v caddy >/dev/null || missing="$$missing caddy"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

# The JavaScript clients and servers the suite runs (tests/node/package.json, pinned by its
# lockfile): reinstalled with npm ci whenever the lockfile changes.
NODE_DIR := tests/node
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package-lock.json | system-deps
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_DIR)/node_modules/.installed

var/demo-%.key: | $(STAMP)
	@mkdir -p var
	@$(PY) -m popgate.gateway keys generate > $@ && chmod 600 $@
	@echo "generated a demo key in $@ (explicitly, once; delete it to invalidate what it signed)"

# Start the demo origin on 127.0.0.1:8000 and popgate in front of it on
# 127.0.0.1:8080 (admin on 127.0.0.1:9090), with the embedded SQLite store.
run: install var/demo-session.key var/demo-puzzle.key
	@$(PY) -m popgate.gateway demo-upstream --listen 127.0.0.1:8000 & up=$$!; \
	trap "kill $$up 2>/dev/null" EXIT INT TERM; \
	echo "popgate: http://127.0.0.1:8080  (admin: http://127.0.0.1:9090/metrics)"; \
	$(PY) -m popgate.gateway run --config deploy/demo.toml

# ruff's rules and format (settings in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy --strict over the popgate.* namespace: the folders install under popgate/ only
# through package-dir, so mypy reads them through a symlink tree (under the venv: git ignores it).
TYPECHECK := $(VENV)/typecheck
typecheck: install
	@mkdir -p $(TYPECHECK)/popgate
	@for p in gateway verifiers policies; do ln -sfn $(CURDIR)/$$p $(TYPECHECK)/popgate/$$p; done
	cd $(TYPECHECK) && $(abspath $(VENV))/bin/mypy --strict -p popgate

test: install system-deps node-deps lint typecheck
	$(VENV)/bin/pytest

# wrk drives the proxies, nginx is the reference; both from apt when missing.
bench-deps: install
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { $(APT_GET) update -qq && $(APT_GET) install -y -qq wrk nginx-light >/dev/null; }

bench: bench-deps
	$(PY) tests/bench/bench_all.py

# A bounded agent-flood run (60 s) against a local stack; report in loadtests/out/REPORT.md.
# FLOOD_ARGS: e.g. --processes 2 (distributed locust), --duration 30, --workers 2 --store redis.
FLOOD_ARGS ?=
flood: install
	$(PY) loadtests/run_flood.py $(FLOOD_ARGS)

# Beyond capacity: capacity measured, then a raw flood at 3x it plus the locust population,
# with admission control off and on; report in loadtests/out/overload/OVERLOAD.md + goodput.png.
flood-overload: install
	$(PY) loadtests/run_flood.py --overload --duration 40 $(FLOOD_ARGS)

# A bounded soak (30 min, 2 workers, Redis, the flood population held steady) that fails on
# growth of worker RSS/fds, TTL-bounded store keys or p99; report in loadtests/out/SOAK.md.
# SOAK_ARGS="--duration 600 --max-rss-mb-per-min 2" etc. (python loadtests/soak.py --help).
soak: install system-deps
	$(PY) loadtests/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
