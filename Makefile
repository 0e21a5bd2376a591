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

# every CPU benchmark with the command BENCHMARKS.md names (several hours on 2 cores);
# bench-quick: each benchmark's quick mode (smoke runs for CI-sized machines, about 10 minutes).
# The GPU one: python -m benchmarks.bench_gpu on a GPU machine.
HYPERREP_CONFIGS := --config hyperrep_configs/compression.yaml --config hyperrep_configs/sane.yaml \
	--config hyperrep_configs/sane-layers.yaml --config hyperrep_configs/sane-moments.yaml \
	--config hyperrep_configs/sane-stats.yaml
SAMPLE_SWEEP := --seeds 0,1,2 --n 20 --bandwidth 0.1,0.2,0.25,0.3,0.4
RESNET_CONFIGS := --config hyperrep_configs/resnet-sane.yaml --config hyperrep_configs/resnet-sane-moments.yaml \
	--config hyperrep_configs/resnet-compression.yaml
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_archive --models 200 --epochs 50 --reads 1000
	$(BIN)/python -m benchmarks.bench_population --models 128 --alone 8 --epochs 2 --rounds 3
	$(BIN)/python -m benchmarks.bench_population --arch cnn_l --models 64 --alone 4 --epochs 1 --train-images 600 --population-size 4,8,16,32,64
	$(BIN)/python -m benchmarks.bench_population --arch unterthiner_cnn --models 64 --alone 4 --epochs 1 --train-images 600 --population-size 4,8,16,32,64
	$(BIN)/python -m benchmarks.bench_hyperrep --run runs/bench-hyperrep $(HYPERREP_CONFIGS) --seeds 0,1,2 --split both
	$(BIN)/python -m benchmarks.bench_hyperrep --run runs/bench-hyperrep-cross --config hyperrep_configs/sane-cross.yaml --config hyperrep_configs/sane-cross-moments.yaml --probe-spec zoo_specs/digits-unterthiner.yaml --seeds 0,1,2 --split both
	$(BIN)/python -m benchmarks.bench_hyperrep --run runs/bench-hyperrep-resnet --spec zoo_specs/digits-resnet18-hyp.yaml $(RESNET_CONFIGS) --seeds 0,1,2 --split both
	$(BIN)/python -m benchmarks.bench_windows --run runs/bench-windows
	$(BIN)/python -m benchmarks.bench_sample --run runs/bench-sample $(SAMPLE_SWEEP) --sampler kde-anchor --sampler kde-2022 --sampler kde
	$(BIN)/python -m benchmarks.bench_sample --run runs/bench-sample-sane --zoo runs/bench-sample/zoo --config hyperrep_configs/sane-sampling.yaml $(SAMPLE_SWEEP) --sampler sane --sampler kde-2022 --sampler kde-anchor
	$(BIN)/python -m benchmarks.bench_sample --run runs/bench-sample-resnet --spec zoo_specs/digits-resnet18-hyp.yaml --config hyperrep_configs/resnet-sane-sampling.yaml --epochs 40 --n 10 --sampler sane --sampler kde-2022
	$(BIN)/python -m benchmarks.bench_sparsify --run runs/bench-sparsify
	$(BIN)/python -m benchmarks.bench_remote_sensing --run runs/bench-remote-sensing
	$(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_archive.py --hypothesis-show-statistics
	$(BIN)/python -m pytest -q -m slow

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench_archive
	$(BIN)/python -m benchmarks.bench_population
	$(BIN)/python -m benchmarks.bench_hyperrep --quick --run runs/quick-hyperrep --split both
	$(BIN)/python -m benchmarks.bench_windows --quick --run runs/quick-windows
	$(BIN)/python -m benchmarks.bench_sample --quick --run runs/quick-sample
	$(BIN)/python -m benchmarks.bench_sparsify --quick --run runs/quick-sparsify
	$(BIN)/python -m benchmarks.bench_remote_sensing --quick --run runs/quick-remote-sensing
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
