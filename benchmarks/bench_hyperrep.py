"""Hyper-representation benchmark: generate a digits Hyp zoo, train, probe; print table and times.

    python -m benchmarks.bench_hyperrep [--run runs/bench-hyperrep] [--epochs 30] [--device cpu]

Every step is the real CLI (``zoo generate``, ``hyperrep train``, ``hyperrep probe``); an existing zoo
or run in the folder is reused (training resumes), so a second call only repeats what is missing.
The zoo (zoo_specs/digits-hyp.yaml) has 336 models x 10 stored epochs as samples; 30 training
epochs take about 7 minutes on a 2-core CPU.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SPEC = "zoo_specs/digits-hyp.yaml"


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench-hyperrep")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--gamma", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run = Path(args.run)
    zoo, rep = run / "zoo", run / "hyperrep"
    times = {"generate": timed("cli.zoo", "generate", SPEC, "--out", str(zoo), "--device",
                               args.device)}
    train = ["cli.hyperrep", "train", str(zoo), "--out", str(rep), "--epochs", str(args.epochs),
             "--device", args.device]
    if args.gamma is not None:
        train += ["--gamma", str(args.gamma)]
    times["train"] = timed(*train)
    times["probe"] = timed("cli.hyperrep", "probe", str(rep), str(zoo), "--json",
                           str(run / "probes.json"), "--plot", str(run / "plots"))
    results = json.loads((run / "probes.json").read_text())
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    continuous = [n for n, r in results.items() if r["metric"] == "r2"]
    beats_w = all(results[n]["embedding"] > results[n]["W"] for n in continuous)
    beats_sw = {n: results[n]["embedding"] > results[n]["S(W)"] for n in ("epoch", "gap")}
    print(f"embedding beats W on every continuous property: {beats_w}; "
          f"beats S(W) on epoch / gap: {beats_sw}")


if __name__ == "__main__":
    main()
