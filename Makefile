# Set-up and the two entry points: `make demo` (main job on offline data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo

.PHONY: setup demo test bench bench-quick clean

# torch==2.13.0 first: the CPU build; a loose requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,ray,pruning]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cli.demo --run $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# every CPU benchmark with the command BENCHMARKS.md names (about 1.5 h on 2 cores);
# bench-quick: the two quick ones. The GPU one: python -m benchmarks.bench_gpu on a GPU machine.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_archive --models 200 --epochs 50 --reads 1000
	$(BIN)/python -m benchmarks.bench_population --models 128 --alone 8 --epochs 2
	$(BIN)/python -m benchmarks.bench_hyperrep --run runs/bench-hyperrep
	$(BIN)/python -m benchmarks.bench_sample --run runs/bench-sample
	$(BIN)/python -m benchmarks.bench_sparsify --run runs/bench-sparsify
	$(BIN)/python -m benchmarks.bench_remote_sensing --run runs/bench-remote-sensing
	$(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_archive.py --hypothesis-show-statistics

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench_archive
	$(BIN)/python -m benchmarks.bench_population

clean:
	rm -rf $(VENV) runs
