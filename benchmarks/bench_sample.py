"""Sampling benchmark: a digits CNN-s Seed zoo -> canonical hyper-representation -> sampled models.

    python -m benchmarks.bench_sample [--run runs/bench-sample] [--epochs 60] [--n 20] [--device cpu]

Every step is the real CLI (``zoo generate``, ``hyperrep train --config``, ``hyperrep sample``); an
existing zoo or run in the folder is reused (training resumes), the sample folder is rewritten.
Prints the report table, the zero-shot ratio of KDE-on-anchors samples to the anchors (goal >= 0.8)
and whether they beat B_T after one fine-tuning epoch.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

SPEC = "zoo_specs/digits-seed.yaml"
CONFIG = "hyperrep_configs/sampling.yaml"  # reconstruction-first, canonicalised weights


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-sample")
    parser.add_argument("--epochs", type=int, default=60, help="hyper-representation epochs")
    parser.add_argument("--n", type=int, default=20, help="samples per sampler")
    parser.add_argument("--bandwidth", default="0.2")
    parser.add_argument("--per-dimension", action="store_true", help="per-dimension KDE")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run = Path(args.run)
    zoo, rep, samples = run / "zoo", run / "hyperrep", run / "samples"
    times = {"generate": timed("cli.zoo", "generate", SPEC, "--out", str(zoo), "--device",
                               args.device)}
    times["train"] = timed("cli.hyperrep", "train", str(zoo), "--out", str(rep), "--config",
                           CONFIG, "--epochs", str(args.epochs), "--device", args.device)
    shutil.rmtree(samples, ignore_errors=True)
    sample = ["cli.hyperrep", "sample", str(rep), str(zoo), "--n", str(args.n), "--out",
              str(samples), "--finetune-epochs", "1", "--bandwidth", args.bandwidth, "--device",
              args.device]
    times["sample"] = timed(*sample, *(["--per-dimension"] if args.per_dimension else []))
    report = json.loads((samples / "report.json").read_text())
    means = {name: report["summary"]["digits"][name]["mean"] for name in
             report["accuracy"]["digits"]}
    anchors = report["anchors_mean_acc"]
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"kde-anchor zero-shot / anchors: {means['kde-anchor'][0] / anchors:.2f} (goal >= 0.8); "
          f"uniform floor / anchors: {means['uniform'][0] / anchors:.2f}; after 1 epoch "
          f"kde-anchor {means['kde-anchor'][1]:.3f} vs B_T {means['B_T'][1]:.3f}")


if __name__ == "__main__":
    main()
