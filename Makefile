# make demo: run the tiny-model pipeline end to end (local keys, no network).
# make test: the test suite.  make bench: benchmarks (not part of make test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-hf demo-replay test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/tiny-model/demo.sh

# The Hub-shaped example: a sharded model directory and its GGUF conversions, verified as
# downloaded (examples/hf-sharded).
demo-hf: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/hf-sharded/demo.sh

# Segment replay: a checkpointed training run replayed in part by two rebuilders, and a forged
# run caught (examples/checkpointed-training, docs/replay.md).
demo-replay: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/checkpointed-training/demo.sh

# The loopback Sigstore the keyless tests sign against (tests/sigstore_mock): its npm packages go
# into that folder's node_modules. Without npm the tests that need it skip and say why.
MOCK := tests/sigstore_mock
MOCK_STAMP := $(MOCK)/node_modules/.installed

$(MOCK_STAMP): $(MOCK)/package.json $(MOCK)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(MOCK) --no-audit --no-fund --loglevel=error && touch $@ \
	    || echo "warning: npm ci in $(MOCK) failed; the loopback Sigstore tests will skip"; \
	else echo "note: npm not found; the loopback Sigstore tests will skip"; fi

test: $(STAMP) $(MOCK_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# OpenSSF Model Signing, the reference the hashing is compared with, in its own environment so
# that it never meets the product's dependencies (its PyPI release also needs pyOpenSSL).
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP):
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet 'model-signing==1.1.1' pyOpenSSL
	@touch $@

# bench/run.py measures hashing, start-up, verify and diff and writes docs/benchmarks.md; then
# every bench/bench_*.py in turn, each printing its own figures (none of them is a test).
bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/run.py --reference-python $(BENCH_VENV)/bin/python
	@set -e; for script in bench/bench_*.py; do \
	  test -e "$$script" || break; \
	  echo "== $$script"; $(BIN)/python "$$script"; \
	done

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(MOCK)/node_modules examples/tiny-model/build examples/tiny-model/attestations examples/tiny-model/keys
