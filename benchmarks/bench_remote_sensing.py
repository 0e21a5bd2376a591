"""Remote-sensing zoos on synthetic data: generate, validate, learn from the weights, probe.

    python -m benchmarks.bench_remote_sensing [--run runs/bench-remote-sensing] [--skip-hyperrep]

For each synthetic spec (contrastive Dual-SimCLR, multitask plants, NO2) it runs the real CLI:
``zoo generate``, ``zoo validate``, ``hyperrep train`` (hyperrep_configs/remote-sensing.yaml) and
``hyperrep probe``; then the linear evaluation of the contrastive zoo's encoders against frozen
random encoders. Finished steps are kept (reruns resume). Prints the per-epoch test metrics of each
zoo, their last-epoch means by every varied factor, the per-model changes quoted in BENCHMARKS.md
(``per_model_changes``), the probe tables, the linear-evaluation
comparison and the time of every step.
"""

import argparse
import json
from pathlib import Path

import yaml

from benchmarks import timed
from modelzoo import open_zoo

SPECS = ["synthetic-dual-simclr", "synthetic-multitask", "synthetic-no2"]
HYPERREP_CONFIG = "hyperrep_configs/remote-sensing.yaml"


def lineval_specs(run: Path) -> dict[str, Path]:
    """The linear-evaluation spec with the contrastive zoo of this run, and its random twin."""
    spec = yaml.safe_load(Path("zoo_specs/synthetic-dual-simclr-lineval.yaml").read_text())
    spec["task"]["pretrained"] = str(run / "synthetic-dual-simclr")
    random = {**spec, "name": spec["name"] + "-random",
              "task": {k: v for k, v in spec["task"].items() if k != "pretrained"}}
    paths = {}
    for name, data in (("pretrained", spec), ("random", random)):
        paths[name] = run / f"lineval-{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data, sort_keys=False))
    return paths


def per_model_changes(table, epochs: list[int]) -> str:
    """What moved model by model: the contrastive linear probe from the first to the last stored
    epoch, and the NO2 models whose uncertainty-filtered test MSE is below the unfiltered one."""
    first = table[table["epoch"] == epochs[0]].set_index("model")
    last = table[table["epoch"] == epochs[-1]].set_index("model")
    lines = []
    if "test_probe_acc" in table:
        rise = last["test_probe_acc"] - first["test_probe_acc"]
        lines.append(f"linear probe, first -> last epoch: rises in {(rise > 0).sum()} of "
                     f"{len(rise)} models, by {rise.min():+.3f} to {rise.max():+.3f}")
    if "test_mse_filtered" in table:
        lower = last["test_mse_filtered"] < last["test_mse"]
        lines.append(f"last epoch: filtered test MSE below the unfiltered in {lower.sum()} of "
                     f"{len(lower)} models")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-remote-sensing")
    parser.add_argument("--skip-hyperrep", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="the multitask zoo only, no linear evaluation (a smoke run)")
    args = parser.parse_args()
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    specs = ["synthetic-multitask"] if args.quick else SPECS
    times = {}
    for name in specs:
        zoo = run / name
        times[f"generate {name}"] = timed("cli.zoo", "generate", f"zoo_specs/{name}.yaml",
                                          "--out", str(zoo))
        timed("cli.zoo", "validate", str(zoo))
        if not args.skip_hyperrep:
            times[f"hyperrep train {name}"] = timed("cli.hyperrep", "train", str(zoo), "--out",
                                                    str(run / f"{name}-hyperrep"), "--config",
                                                    HYPERREP_CONFIG)
            timed("cli.hyperrep", "probe", str(run / f"{name}-hyperrep"), str(zoo), "--json",
                  str(run / f"{name}-probe.json"))
    for kind, spec in ({} if args.quick else lineval_specs(run)).items():
        times[f"linear evaluation ({kind})"] = timed("cli.zoo", "generate", str(spec), "--out",
                                                     str(run / f"lineval-{kind}"))
    for name in specs:
        with open_zoo(run / name) as zoo:
            table = zoo.metadata
            columns = [c for c in table.columns if c.startswith(("test_", "weight_"))]
            print(f"\n{name}: {len(zoo)} models, {zoo.n_params:,} parameters, task {zoo.task}")
            print(table.groupby("epoch")[columns].mean().round(3).to_string())
            last = table[table["epoch"] == zoo.epochs[-1]]
            for factor in zoo.factor_names:  # the breakdowns BENCHMARKS.md reports
                if factor != "seed" and last[factor].nunique() > 1:
                    print(f"last epoch by {factor}:")
                    print(last.groupby(factor)[columns].mean().round(3).to_string())
            if changes := per_model_changes(table, zoo.epochs):
                print(changes)
        probe = run / f"{name}-probe.json"
        if probe.exists():
            print(json.dumps(json.loads(probe.read_text()), indent=1))
    print("\nlinear evaluation, test accuracy at the last epoch (mean over models):")
    for kind in () if args.quick else ("pretrained", "random"):
        with open_zoo(run / f"lineval-{kind}") as zoo:
            last = zoo.metadata[zoo.metadata["epoch"] == zoo.epochs[-1]]["test_acc"]
            print(f"  {kind} encoders: {last.mean():.3f} +- {last.std():.3f}")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
