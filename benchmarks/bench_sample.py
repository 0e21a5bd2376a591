"""Sampling benchmark: zoo -> hyper-representation -> sampled models, judged against B_T and B_F.

    python -m benchmarks.bench_sample [--run runs/bench-sample] [--epochs 60] [--n 20] [--device cpu]

Every step is the real CLI (``zoo generate``, ``hyperrep train --config``, ``hyperrep sample``,
``zoo validate`` of the sample archive, which must pass); an existing zoo or run in the folder is
reused (training resumes), the sample folder is rewritten. Prints the report table and, per sampler,
the zero-shot ratio to the anchors (goal >= 0.8), the distance to the nearest training state
relative to B_F's (goal >= 0.5: at least half as new as an independently trained model) and the
accuracy after one fine-tuning epoch against B_T. ``--spec`` / ``--config`` / ``--sampler`` choose
the zoo, the hyper-representation and the samplers (e.g. a ResNet-18 zoo with a windowed sane-mode
config and ``--sampler sane``); ``--bandwidth 0.1,0.2,...`` sweeps the KDE bandwidth and chooses
each sampler's on zero-shot validation accuracy and distance alone (the test split is only
reported); ``--keep-best K`` keeps the best K of the n draws; ``--zoo`` shares one zoo between
runs; ``--quick``: the tiny Tetris zoo (a smoke run).
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
    parser.add_argument("--bandwidth", default="0.2",
                        help="KDE bandwidth, or a comma list: a sweep, each sampler's chosen on "
                             "validation accuracy and distance (the test split only reported)")
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
    bandwidths = args.bandwidth.split(",")
    reports = {}
    for bandwidth in bandwidths:
        out = samples if len(bandwidths) == 1 else run / f"samples-bw{bandwidth}"
        shutil.rmtree(out, ignore_errors=True)
        sample = ["cli.hyperrep", "sample", str(rep), str(zoo), "--n", str(args.n), "--out",
                  str(out), "--finetune-epochs", "1", "--bandwidth", bandwidth, "--device",
                  args.device]
        sample += [arg for name in args.sampler for arg in ("--sampler", name)]
        sample += ["--keep-best", str(args.keep_best)] if args.keep_best else []
        sample += ["--per-dimension"] if args.per_dimension else []
        # a sweep's reports hold test accuracies too: kept out of sight in a log until chosen
        log = None if len(bandwidths) == 1 else run / f"samples-bw{bandwidth}.log"
        times[f"sample {bandwidth}"] = timed(*sample, log=log)
        times[f"validate {bandwidth}"] = timed("cli.zoo", "validate", str(out))  # must pass
        reports[bandwidth] = json.loads((out / "report.json").read_text())
        if len(bandwidths) == 1:
            print((out / "report.md").read_text())
    chosen = choose_bandwidths(reports) if len(bandwidths) > 1 else \
        {name: bandwidths[0] for name in reports[bandwidths[0]]["samplers"]}
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("\ntest split, each sampler at its bandwidth:\n")
    print("| method | bandwidth | zero-shot | / anchors | after 1 epoch | nearest training state "
          "| / B_F's |")
    print("|---|---|---|---|---|---|---|")
    first = reports[bandwidths[0]]
    for name, bandwidth in [*chosen.items(), ("B_T", None), ("B_F", None)]:
        report = first if bandwidth is None else reports[bandwidth]
        test, near = test_figures(report)
        distance = f"{near[name]:.1f} | {near[name] / near['B_F']:.2f}" if name in near else "- | -"
        print(f"| {name} | {bandwidth or '-'} | {test[name][0]:.3f} | "
              f"{test[name][0] / report['anchors_mean_acc']:.2f} | {test[name][1]:.3f} | "
              f"{distance} |")
    print(f"\nanchors' mean test accuracy {first['anchors_mean_acc']:.3f}; goals: zero-shot / "
          "anchors >= 0.8 with distance / B_F's >= 0.5; after 1 epoch above B_T")


def test_figures(report: dict) -> tuple[dict, dict]:
    """Mean test accuracy [epoch] per method on the zoo's own data set, and mean distance to the
    nearest training state per method."""
    own = next(iter(report["summary"]))
    test = {name: s["mean"] for name, s in report["summary"][own].items()}
    near = {name: float(np.mean(d)) for name, d in report["nearest_train_distance"].items()}
    return test, near


def choose_bandwidths(reports: dict[str, dict]) -> dict[str, str]:
    """Per sampler, chosen without the test split: the bandwidth whose samples lie farthest from
    the training states (distance / B_F's) among those whose zero-shot VALIDATION accuracy is at
    least 0.8 of the anchors'; if none is, the one with the best zero-shot validation accuracy.
    Prints the sweep (validation figures and distances only)."""
    print("\nbandwidth sweep (validation split; test not shown):\n")
    print("| sampler | bandwidth | zero-shot val / anchors' val | distance / B_F's |")
    print("|---|---|---|---|")
    chosen = {}
    for name in next(iter(reports.values()))["samplers"]:
        scores = {}
        for bandwidth, report in reports.items():
            near = {m: np.mean(d) for m, d in report["nearest_train_distance"].items()}
            val = np.mean(report["zero_shot_val_accuracy"][name]) / report["anchors_mean_val_acc"]
            scores[bandwidth] = (val, near[name] / near["B_F"])
            print(f"| {name} | {bandwidth} | {val:.2f} | {near[name] / near['B_F']:.2f} |")
        good = [b for b, (val, _) in scores.items() if val >= 0.8]
        chosen[name] = max(good, key=lambda b: scores[b][1]) if good else \
            max(scores, key=lambda b: scores[b][0])
    print("\nchosen: " + ", ".join(f"{n} {b}" for n, b in chosen.items()))
    return chosen

if __name__ == "__main__":
    main()
