# Two commands do everything on a fresh machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
FUZZ_EXAMPLES ?= 10

.PHONY: run test lint fuzz fuzz-deep bench bench-micro bench-corpus lock clean contract-gate contracts-baseline

$(INSTALLED): requirements-dev.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

## Serve the demo: sandbox vendors (python -m sandboxes) on 8101-8103 and the gateway on http://127.0.0.1:8080
run: $(INSTALLED)
	$(BIN)/gateway demo

## Every test: unit, integration over real sockets, contract fuzzing (quick), Dockerfile lint
test: $(INSTALLED)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check gateway adapters sandboxes tests bench
	$(BIN)/hadolint Dockerfile

## Only the contract fuzzing, deeper: `make fuzz-deep FUZZ_EXAMPLES=500`
fuzz: $(INSTALLED)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz

fuzz-deep: FUZZ_EXAMPLES = 200
fuzz-deep: export CORPUS_DEEP = 1
fuzz-deep: fuzz

## The benchmark (docs/performance.md): nginx upstream, gateway and peers on one core each, wrk; prints the table.
## Needs nginx, wrk, taskset and Redis on 127.0.0.1:6379; the peers are installed into bench/.peers-venv on first use.
## Options: make bench BENCH_ARGS="--seconds 5 --repeat 1 --no-peers"; micro-benchmarks: make bench-micro
bench: $(INSTALLED)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-micro: $(INSTALLED)
	$(BIN)/python bench/micro.py

## Large documents (Stripe's, a generated 500-operation one): check, cold/warm start, RSS, diff, per-request cost
bench-corpus: $(INSTALLED)
	$(BIN)/python bench/corpus.py

## Regenerate the pinned dependency files from pyproject.toml
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --no-header -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev -c requirements.lock --python-version 3.11 --no-header \
	  -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## The breaking-change gate: contracts/ against the recorded baseline (also part of `make test`)
contract-gate: $(INSTALLED)
	$(BIN)/gateway diff .ci/contracts-baseline contracts

## Accept the current contracts as the new baseline (a deliberate act: a release, or retiring a version)
contracts-baseline:
	rm -rf .ci/contracts-baseline && mkdir -p .ci/contracts-baseline && cp -r contracts/. .ci/contracts-baseline/
