# raymlops: `make demo` runs the flagship job end to end, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-unit test-integration lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch that lies on this machine's disk; a bare `torch` could pull a CUDA build.
	$(PIP) install -q --no-compile torch==2.13.0
	$(PIP) install -q --no-compile -e '.[dev,examples]'
	# pip compiles the installed files to bytecode one at a time (~55 s here); compileall does the same on
	# every core. A file some package ships that does not compile is skipped, as pip skips it.
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

demo: setup
	$(PY) examples/flights/prepare.py --out examples/flights/data
	$(VENV)/bin/raymlops run configs/flights.yaml
	$(PY) examples/flights/replay.py

lint: setup
	$(VENV)/bin/lint-imports

# Three parts (tests/conftest.py): the unit tests in two processes of their own; every other test not marked
# serial in two processes, a file at a time, longest first; then the serial ones (wall-clock bounds) with
# the machine to themselves.
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -n 2 --dist loadfile --no-loadscope-reorder -m "not serial" \
		--ignore tests/unit tests
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -m serial tests

test-unit: setup
	$(PY) -m pytest -q -n 2 tests/unit

# Every benchmark writes benchmarks/out/<script>.json; summary.py puts all their ours/baseline ratios in
# benchmarks/out/summary.md (and .json). The flights data comes first: the data and training ones read it.
bench: setup
	$(PY) examples/flights/prepare.py --out examples/flights/data
	$(PY) benchmarks/data_bench.py
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/tune_bench.py
	$(PY) benchmarks/family_bench.py
	$(PY) benchmarks/serve_bench.py
	$(PY) benchmarks/serve_knobs_bench.py
	$(PY) benchmarks/serve_handler_bench.py
	$(PY) benchmarks/monitor_bench.py
	$(PY) benchmarks/registry_bench.py
	$(PY) benchmarks/summary.py

clean:
	rm -rf .raymlops examples/flights/data
