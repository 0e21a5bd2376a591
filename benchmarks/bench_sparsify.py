"""Sparsified twins benchmark: magnitude pruning at several ratios vs variational dropout.

    python -m benchmarks.bench_sparsify [--run runs/bench-sparsify] [--spec zoo_specs/demo-digits.yaml]
        [--ratios 0.5,0.7,0.9] [--finetune-epochs 1] [--vd-epochs 5]

Every step is the real CLI (``zoo generate``, ``zoo sparsify``); an existing zoo in the folder is
reused and finished twin sets are kept (reruns resume). Prints per twin set the mean sparsity, the
test accuracy before and after fine-tuning, and the correlation of twin with dense accuracy.
"""

import argparse
from pathlib import Path

import numpy as np

from benchmarks import timed
from modelzoo import open_zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-sparsify")
    parser.add_argument("--spec", default="zoo_specs/demo-digits.yaml")
    parser.add_argument("--ratios", default="0.5,0.7,0.9")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--vd-epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny Tetris zoo, ratio 0.5, 1 epoch each (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.spec, args.ratios, args.finetune_epochs, args.vd_epochs = \
            "zoo_specs/tiny-tetris.yaml", "0.5", 1, 1
    zoo = Path(args.run) / "zoo"
    times = {"generate": timed("cli.zoo", "generate", args.spec, "--out", str(zoo))}
    times["magnitude"] = timed("cli.zoo", "sparsify", str(zoo), "--method", "magnitude",
                               "--ratios", args.ratios, "--finetune-epochs",
                               str(args.finetune_epochs), "--device", args.device)
    times["variational-dropout"] = timed("cli.zoo", "sparsify", str(zoo), "--method",
                                         "variational-dropout", "--finetune-epochs",
                                         str(args.vd_epochs), "--device", args.device)
    with open_zoo(zoo) as z:
        table = z.metadata
        print(f"\n{len(z)} models; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
        print("| twins | fine-tuning epochs | sparsity | test acc at start | test acc at end | "
              "dense test acc | corr. twin vs dense |")
        print("|---|---|---|---|---|---|---|")
        for name in z.twin_names:
            twin = z.twin(name)
            dense = table[table["epoch"] == twin.entry["from_epoch"]]["test_acc"].to_numpy()
            acc = twin.metrics()["test_acc"]
            print(f"| {name} | {twin.entry['finetune_epochs']} | {twin.sparsity().mean():.3f} | "
                  f"{acc[:, 0].mean():.3f} | {acc[:, -1].mean():.3f} | {dense.mean():.3f} | "
                  f"{np.corrcoef(dense, acc[:, -1])[0, 1]:.3f} |")


if __name__ == "__main__":
    main()
