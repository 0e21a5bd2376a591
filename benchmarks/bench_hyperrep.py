"""Hyper-representation probe benchmark: configs x seeds on one zoo, scored without peeking.

    python -m benchmarks.bench_hyperrep [--spec zoo_specs/digits-hyp.yaml] [--run runs/bench-hyperrep]
        [--config hyperrep_configs/sane.yaml ...] [--seeds 0,1,2] [--epochs 30]
        [--split val | test | both] [--probe-spec SPEC] [--device cpu] [--quick]

The zoo is generated with ``zoo generate`` and every run trained with ``hyperrep train`` (the real
CLI); an existing zoo or run in the folder is reused (training resumes), and each run's probe
scores are cached per split, so a second call only repeats what is missing. ``--config`` names
YAML files of TrainConfig keys (repeatable; none: the defaults); each seed's run gets the file's
keys plus ``seed`` and ``epochs``. Configs that differ only in their readout (``pooling``) share
the trained runs of the first of them: the others are copies re-read with their own readout.
``--probe-spec``: the runs trained on ``--spec``'s zoo embed and probe a zoo of another spec
(another architecture: sane runs whose token size and position tables fit it), split by its own
models; its scores are cached and summarised apart (``summary-SPEC.md``).

The protocol: choose between configs with ``--split val`` (the default): the probes are fitted on
the train split, regularised on val, scored on val, and the test split is not read. Then score the
configs you report with ``--split test`` (or ``both``), once: the test scores are cached and never
recomputed. Prints, per split, the baselines (W, S(W) with biases, S(W) of the weights only as
published in 2021, gradient-boosted trees on S(W)) and each config's embedding as mean +- std over
seeds (each seed in brackets), Kendall's tau of the headline metric, and the margins the probe
issue asks for; writes summary.json and summary.md in the run folder. ``--quick``: the tiny Tetris
zoo, 2 seeds, 3 epochs (a minute on 2 cores; a smoke run, its figures mean nothing).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks import config_with, timed

BASELINES = ("W", "S(W)", "S(W) weights", "S(W)+GBT")


def train_run(zoo: Path, folder: Path, config: Path | None, seed: int, epochs: int,
              device: str) -> Path:
    """Train (or resume) one seed of one config; returns its run folder."""
    merged = config_with(config, folder / f"seed{seed}.yaml", seed=seed, epochs=epochs)
    run = folder / f"seed{seed}"
    # always through hyperrep train: a finished run resumes without training, and takes a changed
    # readout (pooling) into its config
    seconds = timed("cli.hyperrep", "train", str(zoo), "--out", str(run), "--config", str(merged),
                    "--device", device)
    print(f"trained {run} ({seconds:.0f} s)")
    return run


def training_settings(config: Path | None) -> str:
    """A config's validated settings (defaults filled in) less those a finished run may be
    re-read with (its readout), as a key: configs that differ only in readout share one trained
    run per seed."""
    from hyperrep.config import load_train_config
    from hyperrep.train import RESUMABLE

    settings = load_train_config(config, {}).model_dump(mode="json", exclude=set(RESUMABLE))
    return json.dumps(settings, sort_keys=True)


def share_training(source: Path, target: Path) -> None:
    """Copy the trained run ``source`` (weights, checkpoint, config, metrics; not its probe
    scores) to ``target`` unless ``target`` exists: ``hyperrep train`` then re-reads it with the
    target config's readout instead of training it again."""
    if not target.exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("probes-*.json"))


def probe_scores(run: Path, zoo: Path, split: str, device: str, tag: str = "") -> dict:
    """The run's probe table of ``zoo`` on ``split``, computed once and cached in the run folder
    (``tag`` names another zoo than the run's in the cache file)."""
    from hyperrep.probes import probe_splits

    cache = run / f"probes-{split}{tag}.json"
    if not cache.exists():
        start = time.perf_counter()
        table = probe_splits(run, zoo, (split,), device=device)[split]
        cache.write_text(json.dumps(table, indent=1) + "\n")
        print(f"probed {run} on {split} ({time.perf_counter() - start:.0f} s)")
    return json.loads(cache.read_text())


def mean_std(values: list[float]) -> str:
    each = " / ".join(f"{v:.3f}" for v in values)
    return f"{np.mean(values):.3f} +- {np.std(values):.3f} ({each})"


def summarise(tables: dict[str, list[dict]]) -> tuple[dict, str]:
    """{config: [probe table per seed]} -> (summary dict, markdown table)."""
    first = next(iter(tables.values()))[0]
    properties = list(first)
    names = list(tables)
    header = "| property | " + " | ".join(BASELINES) + " | " + \
        " | ".join(f"embedding: {n}" for n in names) + " |"
    lines = [header, "|" + "---|" * (1 + len(BASELINES) + len(names))]
    summary = {}
    for prop in properties:
        row = {c: first[prop][c] for c in BASELINES}
        for name in names:
            row[name] = [t[prop]["embedding"] for t in tables[name]]
        summary[prop] = row
        metric = "" if first[prop]["metric"] == "r2" else " (acc.)"
        lines.append(f"| {prop}{metric} | " + " | ".join(f"{row[c]:.3f}" for c in BASELINES)
                     + " | " + " | ".join(mean_std(row[n]) for n in names) + " |")
        if "kendall_tau" in first[prop]:
            taus = {c: first[prop]["kendall_tau"][c] for c in BASELINES}
            for name in names:
                taus[name] = [t[prop]["kendall_tau"]["embedding"] for t in tables[name]]
            summary[f"{prop} kendall_tau"] = taus
            lines.append(f"| {prop} (Kendall tau) | " + " | ".join(
                f"{taus[c]:.3f}" for c in BASELINES) + " | " + " | ".join(
                mean_std(taus[n]) for n in names) + " |")
    return summary, "\n".join(lines)


def verdicts(summary: dict, tables: dict[str, list[dict]]) -> list[str]:
    """The probe issue's margins, per config, from the mean over seeds."""
    first = next(iter(tables.values()))[0]
    continuous = [p for p, r in first.items() if r["metric"] == "r2"]
    out = []
    for name in tables:
        mean = {p: float(np.mean(summary[p][name])) for p in continuous}
        line = [f"{name}: embedding above W on every continuous property: "
                f"{all(mean[p] > summary[p]['W'] for p in continuous)}"]
        if "epoch" in mean:
            line.append(f"epoch R^2 margin over S(W) weights {mean['epoch'] - summary['epoch']['S(W) weights']:+.3f}, "
                        f"over S(W) {mean['epoch'] - summary['epoch']['S(W)']:+.3f}")
        gbt_wins = [f"{p} by {summary[p]['S(W)+GBT'] - mean[p]:.3f}" for p in continuous
                    if summary[p]["S(W)+GBT"] > mean[p]]
        line.append("S(W)+GBT ahead on " + (", ".join(gbt_wins) or "nothing"))
        out.append("; ".join(line))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="zoo_specs/digits-hyp.yaml")
    parser.add_argument("--run", default="runs/bench-hyperrep")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="TrainConfig YAML (repeatable; none: the defaults)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--split", default="val", choices=("val", "test", "both"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--probe-spec", help="probe the runs on a zoo of this spec instead of "
                        "the one they are trained on (sane runs read other architectures)")
    parser.add_argument("--quick", action="store_true", help="tiny Tetris zoo, 2 seeds, 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.spec, args.seeds, args.epochs = "zoo_specs/tiny-tetris.yaml", "0,1", 3
    run = Path(args.run)
    zoo = run / "zoo"
    print(f"generated the zoo ({timed('cli.zoo', 'generate', args.spec, '--out', str(zoo), '--device', args.device):.0f} s)")  # reused when complete
    probed, tag = zoo, ""
    if args.probe_spec:
        tag = "-" + Path(args.probe_spec).stem
        probed = run / f"zoo{tag}"
        seconds = timed("cli.zoo", "generate", args.probe_spec, "--out", str(probed), "--device",
                        args.device)
        print(f"generated the probed zoo ({seconds:.0f} s)")
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = {c.stem: c for c in args.config} or {"defaults": None}
    splits = ("val", "test") if args.split == "both" else (args.split,)
    tables = {split: {} for split in splits}
    trained_first = {}  # training settings -> the config whose runs hold them
    for name, config in configs.items():
        twin = trained_first.setdefault(training_settings(config), name)
        for seed in seeds:
            if twin != name:
                share_training(run / "runs" / twin / f"seed{seed}",
                               run / "runs" / name / f"seed{seed}")
            trained = train_run(zoo, run / "runs" / name, config, seed, args.epochs, args.device)
            for split in splits:
                tables[split].setdefault(name, []).append(
                    probe_scores(trained, probed, split, args.device, tag))
    report, markdown = {}, []
    for split in splits:
        summary, table = summarise(tables[split])
        report[split] = summary
        zoos = Path(args.spec).stem + (f", probed on {tag[1:]}" if tag else "")
        markdown += [f"### {split} split ({zoos}, seeds {args.seeds}, {args.epochs} epochs)", "",
                     table, ""]
        markdown += [f"- {v}" for v in verdicts(summary, tables[split])] + [""]
    (run / f"summary{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    (run / f"summary{tag}.md").write_text("\n".join(markdown))
    print("\n".join(markdown))


if __name__ == "__main__":
    main()
