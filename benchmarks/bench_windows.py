"""Windowed hyper-representations at full ResNet-18 size: time and peak memory of each step.

    python -m benchmarks.bench_windows [--run runs/bench-windows] [--epochs 2] [--device cpu] [--quick]

Generates six full-size ResNet-18s on digits (``zoo_specs/digits-resnet18-scale.yaml``), then per
windowed config (``hyperrep_configs/resnet-compression.yaml``: windows of 256 tokens of 64, one
latent per window; ``hyperrep_configs/resnet-sane.yaml``: windows of 64 row-tokens, halo 16)
trains ``--epochs`` epochs with a pool of 20 permutations (the config, so changed, is written
beside the run) and embeds every stored state once (``--views 1``). Every step is the real CLI; an
existing zoo is reused, the runs are rewritten. Prints one table: seconds and peak resident memory
per step, tokens per model and per window. Too few models for probes: this measures scale only
(the probes of a ResNet-18 zoo are in ``bench_hyperrep --spec zoo_specs/digits-resnet18-hyp.yaml``).
"""

import argparse
import json
import shutil
from pathlib import Path

import yaml

from benchmarks import config_with, measured
from modelzoo import open_zoo

SPEC = "zoo_specs/digits-resnet18-scale.yaml"
CONFIGS = ("hyperrep_configs/resnet-compression.yaml", "hyperrep_configs/resnet-sane.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-windows")
    parser.add_argument("--spec", default=SPEC)
    parser.add_argument("--epochs", type=int, default=2, help="hyper-representation epochs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="three width-4 ResNet-18s, 1 hyperrep epoch (a smoke run)")
    args = parser.parse_args()
    run = Path(args.run)
    zoo = run / "zoo"
    if args.quick:
        spec = yaml.safe_load(Path(args.spec).read_text())
        args.spec = config_with(args.spec, run / "quick-spec.yaml", name=spec["name"] + "-quick",
                                architecture={**spec["architecture"], "width": 4},
                                factors={**spec["factors"], "seed": {"range": [1, 4]}})
        args.epochs = 1
    seconds, peak = measured("cli.zoo", "generate", str(args.spec), "--out", str(zoo), "--device",
                             args.device)
    with open_zoo(zoo) as z:
        n_models, n_params = len(z), z.n_params
    rows = [("zoo generate (reused if complete)", "-", "-", seconds, peak)]
    for source in CONFIGS:
        name = Path(source).stem
        rep = run / name
        shutil.rmtree(rep, ignore_errors=True)
        # 500 permutations (the default pool) of 11.2 M parameters would take 45 GB of indices
        config = config_with(source, run / Path(source).name, permutations=20)
        seconds, peak = measured("cli.hyperrep", "train", str(zoo), "--out", str(rep), "--config",
                                 str(config), "--epochs", str(args.epochs), "--device", args.device)
        saved = json.loads((rep / "config.json").read_text())
        tokens, window = saved["zoo_tokens"], saved["train"]["window"]
        rows.append((f"hyperrep train {name} ({args.epochs} epochs)", tokens,
                     window, seconds, peak))
        seconds, peak = measured("cli.hyperrep", "embed", str(rep), str(zoo), "--out",
                                 str(rep / "embeddings.npz"), "--views", "1", "--device",
                                 args.device)
        rows.append((f"hyperrep embed {name} (every state, 1 view)", tokens,
                     window, seconds, peak))
    print(f"\n{n_models} models of {n_params:,} parameters")
    print("| step | tokens per model | tokens per window | seconds | peak memory (GiB) |")
    print("|---|---|---|---|---|")
    for step, tokens, window, seconds, peak in rows:
        print(f"| {step} | {tokens} | {window} | {seconds:.0f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
