"""Reading a zoo's states: our archive vs one torch checkpoint file per state (published layout).

    python -m benchmarks.bench_archive [--models 200] [--epochs 50] [--reads 1000]

Writes the same random CNN-s states both ways (archive shards of 100 models; files
``model_XXXX/checkpoint_EEEEEE/checkpoints`` holding a state_dict), then times, in one process:
- bulk: all models x all states into one float32 [models, states, params] array;
- random: single (model, epoch) states in a random order, as a flat vector.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelzoo.archive import METRICS, ArchiveWriter, ModelRun
from modelzoo.generate import spec_layout, zoo_manifest
from modelzoo.specs import parse_spec
from modelzoo.zoo import open_zoo


def build(root: Path, n_models: int, n_epochs: int):
    spec = parse_spec({"name": "bench", "architecture": {"name": "cnn_s", "in_channels": 1},
                       "dataset": {"name": "digits"}, "training": {"epochs": n_epochs},
                       "factors": {"seed": {"range": [0, n_models]}}})
    layout = spec_layout(spec)
    rng = np.random.default_rng(0)
    writer = ArchiveWriter.open(root / "zoo", zoo_manifest(spec, shard_size=100))
    files = root / "files"
    for start, stop in writer.pending():
        runs = []
        for m in range(start, stop):
            states = rng.standard_normal((n_epochs + 1, layout.size), dtype=np.float32)
            runs.append(ModelRun(states, {k: np.zeros(n_epochs + 1, np.float32) for k in METRICS}))
            for e in range(n_epochs + 1):
                folder = files / f"model_{m:04d}" / f"checkpoint_{e:06d}"
                folder.mkdir(parents=True)
                torch.save(layout.unflatten(states[e]), folder / "checkpoints")
        writer.write_shard(start, stop, runs)
    writer.finalize()
    return layout, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--reads", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layout, files = build(root, args.models, args.epochs)
        n_states = args.epochs + 1

        def load_file(m: int, e: int) -> np.ndarray:
            path = files / f"model_{m:04d}" / f"checkpoint_{e:06d}" / "checkpoints"
            state = torch.load(path, weights_only=True)
            return layout.flatten(state)

        start = time.perf_counter()
        bulk_files = np.stack([np.stack([load_file(m, e) for e in range(n_states)])
                               for m in range(args.models)])
        t_files = time.perf_counter() - start
        start = time.perf_counter()
        zoo = open_zoo(root / "zoo")
        bulk_zoo = zoo.weights()
        t_zoo = time.perf_counter() - start
        assert np.array_equal(bulk_files, bulk_zoo)

        rng = np.random.default_rng(1)
        picks = [(int(m), int(e)) for m, e in zip(rng.integers(0, args.models, args.reads),
                                                  rng.integers(0, n_states, args.reads))]
        start = time.perf_counter()
        for m, e in picks:
            load_file(m, e)
        r_files = time.perf_counter() - start
        zoo = open_zoo(root / "zoo")
        start = time.perf_counter()
        for m, e in picks:
            zoo.flat(m, e)
        r_zoo = time.perf_counter() - start

    states = args.models * n_states
    print(f"{args.models} models x {n_states} states x {layout.size} params (CNN-s), "
          f"{states:,} states")
    print(f"bulk   : files {t_files:7.2f} s   archive {t_zoo:7.3f} s   ratio {t_files / t_zoo:7.1f}x")
    print(f"random : files {r_files / args.reads * 1e3:7.3f} ms/read   archive "
          f"{r_zoo / args.reads * 1e3:7.3f} ms/read   ratio {r_files / r_zoo:7.1f}x")


if __name__ == "__main__":
    main()
