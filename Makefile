# Everything runs inside .venv. `make install` is idempotent: it reinstalls
# only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run serve test chaos system-deps migrate bench bench-capacity bench-capacity-quick clean vendor

# The Python client (clients/python) installs beside the server, editable, with its
# WebSocket and terminal-rendering extras: its tests and the chaos suite drive it.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e 'clients/python[ws,rich]'
	touch $(STAMP)

install: $(STAMP)

# `make run` serves plain http on 127.0.0.1: HTTPS=0, and a random key kept
# in .venv so sessions survive restarts. A deployment sets its own SECRET_KEY
# and keeps HTTPS on (docs/deploy.md); either wins here when set.
KEY_FILE := $(VENV)/secret-key
LOCAL_ENV = HTTPS=$${HTTPS:-0} SECRET_KEY="$${SECRET_KEY:-$$(cat $(KEY_FILE))}"
# Daphne closes a connection that has not sent its request within 60 s
# (--http-timeout is the whole-request limit: unset, as streams are long),
# a WebSocket not accepted within 5 s, and pings silent sockets every 20 s.
DAPHNE_FLAGS ?= --websocket_connect_timeout 5 --ping-interval 20 --ping-timeout 30

$(KEY_FILE): | $(STAMP)
	$(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

migrate: install $(KEY_FILE)
	$(LOCAL_ENV) $(BIN)/python manage.py migrate --noinput

run: migrate
	$(LOCAL_ENV) $(BIN)/python manage.py create_demo_user --url http://$(HOST):$(PORT)/
	$(LOCAL_ENV) $(BIN)/daphne $(DAPHNE_FLAGS) -b $(HOST) -p $(PORT) project.asgi:application

# Debian packages the tests use: Chromium for the browser tests, nginx for the
# proxy phase of the transport benchmark, iproute2 for the network-switch tests'
# namespaces. Installed when we can (root).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "Missing Debian packages:$$missing. Install them, or the tests that need them will skip."; \
		fi; \
	fi

# The chaos suite at full size: 1,000 random connection cuts per database, then
# kill -9 under load (tests/test_chaos.py; `make test` runs it with 100 cuts);
# then the fuzz suite (hypothesis, schemathesis) at 1,000 examples per property
# against SQLite and PostgreSQL (`make test` runs 25-60).
FUZZ_MODULES := tests/test_input_fuzz.py tests/test_fuzz_durable.py tests/test_fuzz_ws_frames.py tests/test_openapi.py
chaos: install
	CHAT_CHAOS_CUTS=1000 CHAT_CHAOS_SECONDS=240 $(BIN)/python -m pytest tests/test_chaos.py -s $(PYTEST_ARGS)
	CHAT_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -n 2 --dist loadgroup $(FUZZ_MODULES) $(PYTEST_ARGS)

# Tests run in parallel, a module per worker (tests/conftest.py); they mostly wait
# on servers, so more workers than cores pays. PYTEST_WORKERS=0 runs them serially.
PYTEST_WORKERS ?= 4
test: install system-deps conformance-deps ai-sdk-deps axe-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The Durable Streams conformance suite and Node client (tests/conformance),
# pinned by its package-lock.json. Without npm the step only says so, and the
# tests that need it skip (or fail under CHAT_REQUIRE_SERVICES=1).
CONFORMANCE := tests/conformance
.PHONY: conformance-deps conformance

$(CONFORMANCE)/node_modules/.installed: $(CONFORMANCE)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(CONFORMANCE) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm is missing: the Durable Streams conformance tests will skip."; \
	fi

conformance-deps: $(CONFORMANCE)/node_modules/.installed

# The Vercel AI SDK's client (`ai`) and esbuild, pinned by tests/ai_sdk/package-lock.json:
# tests/test_ai_sdk_client.py drives the client from Node against a live server, and
# tests/browser/test_ai_sdk_chat.py a page bundled from it in Chromium. Without npm they skip.
AI_SDK := tests/ai_sdk
.PHONY: ai-sdk-deps

$(AI_SDK)/node_modules/.installed: $(AI_SDK)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(AI_SDK) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm is missing: the AI SDK client tests will skip."; \
	fi

ai-sdk-deps: $(AI_SDK)/node_modules/.installed

# axe-core, which the browser tests inject into the chat page (tests/browser/test_chat_axe.py),
# pinned by its package-lock.json; without npm those tests skip.
AXE := tests/browser/axe
.PHONY: axe-deps

$(AXE)/node_modules/.installed: $(AXE)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(AXE) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm is missing: the accessibility (axe-core) tests will skip."; \
	fi

axe-deps: $(AXE)/node_modules/.installed

# Runs the conformance suite alone and prints its pass count per group (docs/durable-streams.md).
conformance: install conformance-deps
	$(BIN)/python -m pytest tests/durable/test_ds_conformance.py -s -q

# A deployment on one machine (docs/deploy.md, "Processes"), from the Procfile with
# honcho: nginx on 127.0.0.1:8000, uvicorn × WEB_CONCURRENCY, run_generations × WORKERS,
# against PostgreSQL and Redis (CHAT_RUNNER=workers). `make run` needs neither. It makes
# no account (a deployment never gets a known password): `manage.py createsuperuser`.
WORKERS ?= 2
WEB_CONCURRENCY ?= 2
SERVE_ENV = $(LOCAL_ENV) CHAT_RUNNER=workers WEB_CONCURRENCY=$(WEB_CONCURRENCY) PATH="$(CURDIR)/$(BIN):$$PATH" \
	DATABASE_URL="$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/chat}" REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:6379/0}"

serve: install $(KEY_FILE)
	mkdir -p $(VENV)/nginx/temp
	$(SERVE_ENV) $(BIN)/python deploy/ensure_database.py
	$(SERVE_ENV) $(BIN)/python manage.py migrate --noinput
	$(SERVE_ENV) $(BIN)/honcho start -f Procfile -c worker=$(WORKERS)

bench: install
	$(BIN)/python -m bench.transports

# Streams one process sustains against bare servers (docs/performance.md). Pass
# e.g. BENCH_ARGS="--servers project-uvicorn --streams 50,100" or "--code <commit>,worktree".
bench-capacity: install
	$(BIN)/python -m bench.capacity --plot docs/capacity.png $(BENCH_ARGS)

bench-capacity-quick: install
	$(BIN)/python -m bench.capacity --quick $(BENCH_ARGS)

# The chat page's browser libraries, committed in static/vendor/ with their
# licences (so neither `make run` nor `make test` needs npm), pinned by
# vendor/package-lock.json. After a version bump there: `make vendor`.
VENDORED := static/vendor
vendor:
	cd vendor && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDORED)/marked $(VENDORED)/dompurify $(VENDORED)/highlight
	sed '/sourceMappingURL/d' vendor/node_modules/marked/lib/marked.esm.js > $(VENDORED)/marked/marked.esm.js
	sed '/sourceMappingURL/d' vendor/node_modules/dompurify/dist/purify.es.mjs > $(VENDORED)/dompurify/purify.es.js
	cp vendor/node_modules/@highlightjs/cdn-assets/es/highlight.min.js $(VENDORED)/highlight/highlight.min.js
	cp vendor/node_modules/@highlightjs/cdn-assets/styles/github.min.css vendor/node_modules/@highlightjs/cdn-assets/styles/github-dark.min.css $(VENDORED)/highlight/
	cp vendor/node_modules/marked/LICENSE* $(VENDORED)/marked/
	cp vendor/node_modules/dompurify/LICENSE* $(VENDORED)/dompurify/
	cp vendor/node_modules/@highlightjs/cdn-assets/LICENSE $(VENDORED)/highlight/
	cd vendor && npm ls --depth=0 --parseable --long | sed -n 's|.*node_modules/[^:]*:||p' > ../$(VENDORED)/VERSIONS

clean:
	rm -rf $(VENV) db.sqlite3*
