"""The README's main job: every step of the chain on built-in offline data, through the real CLIs.

    python -m cli.demo --run runs/demo
    python -m cli.demo --run runs/quick --quick   # the same steps on a 12-model Tetris zoo (CI)

Each step is the command a user would type; the demo stops at the first that fails. It ends with
the sampling report: unseen models decoded from a canonical hyper-representation against B_T / B_F.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

SPEC = "zoo_specs/demo-digits.yaml"
QUICK_SPEC = "zoo_specs/tiny-tetris.yaml"
SAMPLING_CONFIG = "hyperrep_configs/demo-sampling.yaml"


def step(title: str, *args: str) -> None:
    print(f"\n=== {title}: {' '.join(args)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", *args])
    if result.returncode != 0:
        sys.exit(f"demo: step '{title}' failed with exit code {result.returncode}")
    print(f"--- {title}: {time.perf_counter() - start:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="folder for everything the demo writes")
    parser.add_argument("--quick", action="store_true",
                        help="every step on a 12-model Tetris zoo with 2-epoch hyper-representations")
    args = parser.parse_args()
    run = Path(args.run)
    zoo = run / "zoo"
    short = ("--epochs", "2") if args.quick else ()
    step("generate a zoo", "cli.zoo", "generate", QUICK_SPEC if args.quick else SPEC,
         "--out", str(zoo))
    step("inspect it", "cli.zoo", "info", str(zoo))
    step("validate it", "cli.zoo", "validate", str(zoo))
    step("train a hyper-representation", "cli.hyperrep", "train", str(zoo), "--out",
         str(run / "hyperrep"), *short)
    step("probe it against W and S(W)", "cli.hyperrep", "probe", str(run / "hyperrep"), str(zoo),
         "--json", str(run / "probes.json"), "--plot", str(run / "plots"))
    step("train a canonical hyper-representation to sample from", "cli.hyperrep", "train",
         str(zoo), "--out", str(run / "hyperrep-sampling"), "--config", SAMPLING_CONFIG, *short)
    shutil.rmtree(run / "samples", ignore_errors=True)  # a rerun draws afresh
    step("sample unseen models, judge them against B_T and B_F", "cli.hyperrep", "sample",
         str(run / "hyperrep-sampling"), str(zoo), "--n", "2" if args.quick else "10",
         "--out", str(run / "samples"), "--finetune-epochs", "1")


if __name__ == "__main__":
    main()
