"""Sampling benchmark: zoo -> hyper-representation -> sampled models, judged against B_T and B_F.

    python -m benchmarks.bench_sample [--run runs/bench-sample] [--epochs 60] [--n 20] [--device cpu]

Every step is the real CLI (``zoo generate``, ``hyperrep train --config``, ``hyperrep sample``,
``zoo validate`` of the sample archive, which must pass); an existing zoo or run in the folder is
reused (training resumes), the sample folder is rewritten. Prints the report table and, per sampler,
the zero-shot ratio to the anchors (goal >= 0.8), the distance to the nearest training state
relative to B_F's (goal >= 0.5: at least half as new as an independently trained model) and the
accuracy after one fine-tuning epoch against B_T. ``--spec`` / ``--config`` / ``--sampler`` choose
the zoo, the hyper-representation and the samplers (e.g. a ResNet-18 zoo with a windowed sane-mode
config and ``--sampler sane``), ``--keep-best K`` keeps the best K of the n draws, ``--zoo`` shares
one zoo between runs; ``--quick``: the tiny Tetris zoo (a smoke run).
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from benchmarks import timed

SPEC = "zoo_specs/digits-seed.yaml"
CONFIG = "hyperrep_configs/sampling.yaml"  # reconstruction-first, canonicalised weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-sample")
    parser.add_argument("--spec", default=SPEC, help="zoo spec (e.g. a ResNet-18 zoo)")
    parser.add_argument("--epochs", type=int, default=60, help="hyper-representation epochs")
    parser.add_argument("--n", type=int, default=20, help="samples per sampler")
    parser.add_argument("--bandwidth", default="0.2")
    parser.add_argument("--per-dimension", action="store_true", help="per-dimension KDE")
    parser.add_argument("--config", default=CONFIG, help="hyper-representation config YAML")
    parser.add_argument("--sampler", action="append", default=[],
                        help="sampler (repeatable; default: those of hyperrep sample)")
    parser.add_argument("--keep-best", type=int, help="keep the best K of the n draws per sampler")
    parser.add_argument("--zoo", help="zoo folder (default: RUN/zoo; shared between runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny Tetris zoo, 5 epochs, 3 samples (a smoke run)")
    args = parser.parse_args()
    spec = args.spec
    if args.quick:
        spec, args.epochs, args.n = "zoo_specs/tiny-tetris.yaml", 5, 3
    run = Path(args.run)
    zoo, rep, samples = Path(args.zoo or run / "zoo"), run / "hyperrep", run / "samples"
    times = {"generate": timed("cli.zoo", "generate", spec, "--out", str(zoo), "--device",
                               args.device)}
    times["train"] = timed("cli.hyperrep", "train", str(zoo), "--out", str(rep), "--config",
                           args.config, "--epochs", str(args.epochs), "--device", args.device)
    shutil.rmtree(samples, ignore_errors=True)
    sample = ["cli.hyperrep", "sample", str(rep), str(zoo), "--n", str(args.n), "--out",
              str(samples), "--finetune-epochs", "1", "--bandwidth", args.bandwidth, "--device",
              args.device]
    sample += [arg for name in args.sampler for arg in ("--sampler", name)]
    sample += ["--keep-best", str(args.keep_best)] if args.keep_best else []
    times["sample"] = timed(*sample, *(["--per-dimension"] if args.per_dimension else []))
    times["validate"] = timed("cli.zoo", "validate", str(samples))  # fails unless the archive is sound
    report = json.loads((samples / "report.json").read_text())
    own = next(iter(report["summary"]))  # the zoo's own data set
    means = {name: s["mean"] for name, s in report["summary"][own].items()}
    anchors = report["anchors_mean_acc"]
    near = {name: np.mean(d) for name, d in report["nearest_train_distance"].items()}
    print((samples / "report.md").read_text())
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    for name in report["samplers"]:
        print(f"{name}: zero-shot / anchors {means[name][0] / anchors:.2f} (goal >= 0.8); "
              f"distance to the nearest training state / B_F's {near[name] / near['B_F']:.2f} "
              f"(goal >= 0.5); after 1 epoch {means[name][1]:.3f} vs B_T {means['B_T'][1]:.3f}")


if __name__ == "__main__":
    main()
