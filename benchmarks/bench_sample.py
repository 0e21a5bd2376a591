"""Sampling benchmark: zoo -> hyper-representation -> sampled models, judged against B_T and B_F.

    python -m benchmarks.bench_sample [--run runs/bench-sample] [--seeds 0,1,2] [--epochs 60] [--n 20]
        [--bandwidth 0.1,0.2,...] [--config YAML] [--sampler NAME ...] [--spec YAML] [--device cpu]

Every step is the real CLI (``zoo generate``, ``hyperrep train --config``, ``hyperrep sample``,
``zoo validate`` of the sample archive, which must pass), per hyper-representation seed into
RUN/seed{S}/hyperrep and RUN/seed{S}/samples-bw{B}; an existing zoo or run is reused (training
resumes), the sample folders are rewritten. Prints, per sampler, mean +- std over the seeds of the
zero-shot test accuracy and its ratio to the anchors (goal >= 0.8), the accuracy after one
fine-tuning epoch against B_T, and the distance to the nearest training state with its ratio to
B_F's (goal >= 0.5: at least half as new as an independently trained model).

``--spec`` / ``--config`` / ``--sampler`` choose the zoo, the hyper-representation and the
samplers (e.g. a ResNet-18 zoo with a windowed sane-mode config and ``--sampler sane``);
``--bandwidth 0.1,0.2,...`` sweeps the KDE bandwidth and chooses each sampler's on zero-shot
validation accuracy and distance alone (the test split is only reported); ``--keep-best K`` keeps
the best K of the n draws; ``--zoo`` shares one zoo between runs; ``--quick``: the tiny Tetris zoo
(a smoke run).
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from benchmarks import config_with, timed

SPEC = "zoo_specs/digits-seed.yaml"
CONFIG = "hyperrep_configs/sampling.yaml"  # reconstruction-first, canonicalised weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-sample")
    parser.add_argument("--spec", default=SPEC, help="zoo spec (e.g. a ResNet-18 zoo)")
    parser.add_argument("--epochs", type=int, default=60, help="hyper-representation epochs")
    parser.add_argument("--seeds", default="0", help="hyper-representation seeds, comma list")
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
    zoo = Path(args.zoo or run / "zoo")
    seeds, bandwidths = args.seeds.split(","), args.bandwidth.split(",")
    single = len(seeds) == 1 and len(bandwidths) == 1
    times = {"generate": timed("cli.zoo", "generate", spec, "--out", str(zoo), "--device",
                               args.device)}
    reports: dict[str, list[dict]] = {bandwidth: [] for bandwidth in bandwidths}  # over seeds
    for seed in seeds:
        folder = run / f"seed{seed}"
        config = config_with(args.config, folder / "config.yaml", seed=int(seed))
        rep = folder / "hyperrep"
        times[f"train {seed}"] = timed("cli.hyperrep", "train", str(zoo), "--out", str(rep),
                                       "--config", str(config), "--epochs", str(args.epochs),
                                       "--device", args.device)
        for bandwidth in bandwidths:
            out = folder / f"samples-bw{bandwidth}"
            shutil.rmtree(out, ignore_errors=True)
            sample = ["cli.hyperrep", "sample", str(rep), str(zoo), "--n", str(args.n), "--out",
                      str(out), "--finetune-epochs", "1", "--bandwidth", bandwidth, "--device",
                      args.device]
            sample += [arg for name in args.sampler for arg in ("--sampler", name)]
            sample += ["--keep-best", str(args.keep_best)] if args.keep_best else []
            sample += ["--per-dimension"] if args.per_dimension else []
            # the reports hold test accuracies too: kept out of sight in logs until chosen
            log = None if single else folder / f"samples-bw{bandwidth}.log"
            times[f"sample {seed}/{bandwidth}"] = timed(*sample, log=log)
            timed("cli.zoo", "validate", str(out))  # fails unless the sample archive is sound
            reports[bandwidth].append(json.loads((out / "report.json").read_text()))
            if single:
                print((out / "report.md").read_text())
    chosen = choose_bandwidths(reports) if len(bandwidths) > 1 else \
        {name: bandwidths[0] for name in reports[bandwidths[0]][0]["samplers"]}
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"\ntest split, each sampler at its bandwidth; mean +- std over hyper-representation "
          f"seeds {args.seeds} (each seed's figure is the mean over its {args.n} samples):\n")
    print("| method | bandwidth | zero-shot | / anchors | after 1 epoch | nearest training state "
          "| / B_F's |")
    print("|---|---|---|---|---|---|---|")
    for name, bandwidth in [*chosen.items(), ("B_T", bandwidths[0]), ("B_F", bandwidths[0])]:
        figures = np.array([seed_figures(report, name) for report in reports[bandwidth]])
        cells = [f"{m:.3f} +- {d:.3f}" if np.isfinite(m) else "-"
                 for m, d in zip(figures.mean(0), figures.std(0))]
        shown = bandwidth if name in chosen else "-"
        print(f"| {name} | {shown} | " + " | ".join(cells) + " |")
    anchors = np.mean([r["anchors_mean_acc"] for r in reports[bandwidths[0]]])
    print(f"\nanchors' mean test accuracy {anchors:.3f}; goals: zero-shot / anchors >= 0.8 with "
          "distance / B_F's >= 0.5; after 1 epoch above B_T")


def distances(report: dict, name: str) -> tuple[float, float]:
    """One seed's mean distance of ``name``'s starting weights to the nearest training state, and
    its ratio to B_F's (NaN for B_T, which has no starting weights): weights only, no labels."""
    near = {m: float(np.mean(d)) for m, d in report["nearest_train_distance"].items()}
    distance = near.get(name, np.nan)
    return distance, distance / near["B_F"]


def seed_figures(report: dict, name: str) -> list[float]:
    """One seed's means for ``name``: zero-shot test accuracy, its ratio to the anchors', test
    accuracy after 1 epoch, and ``distances``."""
    own = next(iter(report["summary"]))
    test = report["summary"][own][name]["mean"]
    return [test[0], test[0] / report["anchors_mean_acc"], test[1], *distances(report, name)]


def choose_bandwidths(reports: dict[str, list[dict]]) -> dict[str, str]:
    """Per sampler, chosen without the test split: the bandwidth whose samples lie farthest from
    the training states (distance / B_F's) among those whose zero-shot VALIDATION accuracy is at
    least 0.8 of the anchors'; if none is, the one with the best zero-shot validation accuracy.
    Both figures are means over the seeds. Prints the sweep (validation figures and distances)."""
    print("\nbandwidth sweep (validation split; test not shown), means over seeds:\n")
    print("| sampler | bandwidth | zero-shot val / anchors' val | distance / B_F's |")
    print("|---|---|---|---|")
    chosen = {}
    for name in next(iter(reports.values()))[0]["samplers"]:
        scores = {}
        for bandwidth, per_seed in reports.items():
            val = np.mean([np.mean(r["zero_shot_val_accuracy"][name]) / r["anchors_mean_val_acc"]
                           for r in per_seed])
            novelty = np.mean([distances(r, name)[1] for r in per_seed])
            scores[bandwidth] = (val, novelty)
            print(f"| {name} | {bandwidth} | {val:.2f} | {novelty:.2f} |")
        good = [b for b, (val, _) in scores.items() if val >= 0.8]
        chosen[name] = max(good, key=lambda b: scores[b][1]) if good else \
            max(scores, key=lambda b: scores[b][0])
    print("\nchosen: " + ", ".join(f"{n} {b}" for n, b in chosen.items()))
    return chosen


if __name__ == "__main__":
    main()
