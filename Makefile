# popgate — the two commands: `make run` and `make test`. Both set up everything they need.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# The demo's addresses (`make run DEMO_LISTEN=127.0.0.1:8081` etc.)
DEMO_ORIGIN ?= 127.0.0.1:8000
DEMO_LISTEN ?= 127.0.0.1:8080
DEMO_ADMIN  ?= 127.0.0.1:9090
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: install install-run system-deps node-deps vendor-idkit run test lint typecheck bench bench-deps flood flood-overload soak image image-deps clean

# What each command installs (pyproject.toml extras): `make run` the runtime dependencies
# only (+ uvloop); `make test` everything the suite, the benchmark and the load tests use.
EXTRAS_run   := fast
EXTRAS_test  := fast,test,bench,flood,tracing
EXTRAS_bench := fast,bench
EXTRAS_flood := fast,flood

# One stamp per set; each install says how long it took and how big the venv is.
$(VENV)/.installed-%: pyproject.toml
	@start=$$(date +%s); \
	[ -x $(PY) ] || python3 -m venv $(VENV); \
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[$(EXTRAS_$*)]' || exit 1; \
	echo "make: installed .[$(EXTRAS_$*)] into $(VENV) in $$(( $$(date +%s) - start )) s ($$(du -sh $(VENV) | cut -f1))"
	@touch $@

install-run: $(VENV)/.installed-run
install: $(STAMP)
$(STAMP): $(VENV)/.installed-test
	@touch $@

# Debian packages the test suite drives for real: redis-server (store tests),
# redis-sentinel (failover tests), chromium (the browser challenge page), nginx and caddy
# (forward-auth mode behind the shipped edge configs), iproute2 (the partition test's network
# namespace), dnsmasq-base (a real DNS server for the forward-confirmed reverse DNS tests), jq (a README example).
# Installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v caddy >/dev/null || missing="$$missing caddy"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	{ command -v dnsmasq || test -x /usr/sbin/dnsmasq; } >/dev/null || missing="$$missing dnsmasq-base"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	[ -e /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || missing="$$missing fonts-droid-fallback"; \
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

var/demo-%.key: | $(VENV)/.installed-run
	@mkdir -p var
	@umask 077 && $(PY) -m popgate.gateway keys generate > $@
	@echo "generated a demo key in $@ (explicitly, once; delete it to invalidate what it signed)"

# Start the demo origin on 127.0.0.1:8000 and popgate in front of it on
# 127.0.0.1:8080 (admin on 127.0.0.1:9090), with the embedded SQLite store and the
# credits admin API (its token in var/demo-admin.key). Only the runtime dependencies.
run: install-run var/demo-session.key var/demo-puzzle.key var/demo-admin.key
	@$(PY) -m popgate.gateway demo-upstream --listen $(DEMO_ORIGIN) & up=$$!; \
	trap "kill $$up 2>/dev/null" EXIT INT TERM; \
	echo "popgate: http://$(DEMO_LISTEN)  (admin: http://$(DEMO_ADMIN)/)  command: $(VENV)/bin/popgate"; \
	$(PY) -m popgate.gateway run --config deploy/demo.toml \
	  --listen $(DEMO_LISTEN) --admin $(DEMO_ADMIN) --upstream http://$(DEMO_ORIGIN)

# Re-vendor the IDKit widget into gateway/static/vendor/ from the pinned npm package (README: The challenge page).
vendor-idkit: node-deps
	python3 deploy/vendor/vendor_idkit.py

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
bench-deps: $(VENV)/.installed-bench
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { $(APT_GET) update -qq && $(APT_GET) install -y -qq wrk nginx-light >/dev/null; }

bench: bench-deps
	$(PY) tests/bench/bench_all.py

# A bounded agent-flood run (60 s) against a local stack; report in loadtests/out/REPORT.md.
# FLOOD_ARGS: e.g. --processes 2 (distributed locust), --duration 30, --workers 2 --store redis.
FLOOD_ARGS ?=
flood: $(VENV)/.installed-flood
	$(PY) loadtests/run_flood.py $(FLOOD_ARGS)

# Beyond capacity: capacity measured, then a raw flood at 3x it plus the locust population,
# with admission control off and on; report in loadtests/out/overload/OVERLOAD.md + goodput.png.
flood-overload: $(VENV)/.installed-flood
	$(PY) loadtests/run_flood.py --overload --duration 40 $(FLOOD_ARGS)

# A bounded soak (30 min, 2 workers, Redis, the flood population held steady) that fails on
# growth of worker RSS/fds, TTL-bounded store keys or p99; report in loadtests/out/SOAK.md.
# SOAK_ARGS="--duration 600 --max-rss-mb-per-min 2" etc. (python loadtests/soak.py --help).
soak: $(VENV)/.installed-flood system-deps
	$(PY) loadtests/soak.py $(SOAK_ARGS)

# The container image: deploy/Dockerfile built with podman (daemonless) FROM a Debian base made
# here by mmdebstrap (no registry needed), then run and checked (/healthz 200, a 402); deploy/image.sh.
image-deps:
	@missing=""; \
	for t in podman buildah mmdebstrap runc; do \
	  { command -v $$t || test -x /usr/sbin/$$t; } >/dev/null || missing="$$missing $$t"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

image: image-deps
	deploy/image.sh

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
.PRECIOUS: $(VENV)/.installed-%
