# tollkeep — `make demo` runs the demo, `make test` runs every check. Both set up .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

PORT   ?= 8080

demo: $(STAMP)
	$(BIN)/tollkeep demo --port $(PORT)

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test (e.g. a -k that matches nothing): say so, don't fail.
# Tests run in PYTEST_WORKERS processes (pytest-xdist; 0 = in this process): each test has its own
# SQLite file, PostgreSQL schema and ports, so they don't share state.
PYTEST_WORKERS ?= 2
unit: $(STAMP)
	@$(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests ran"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.payments
	$(BIN)/python -m bench.gateway_mcp
	$(BIN)/python -m bench.licensing
	$(BIN)/python -m bench.renewals --profile

# optional: the load generator the benchmarks use (Debian/Ubuntu, as root); without it the
# webhook-receive benchmark is skipped with a message
.PHONY: bench-tools
bench-tools:
	command -v wrk >/dev/null || apt-get install -y wrk

serve: $(STAMP)
	$(BIN)/tollkeep serve

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
