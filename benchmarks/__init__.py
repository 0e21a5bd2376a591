"""Benchmarks: each script prints ratios against a baseline run in the same process."""

import os
import subprocess
import sys
import time
from pathlib import Path


def measured(*args: str, log: Path | None = None) -> tuple[float, float]:
    """Run ``python -m args`` (a real CLI step; its output to ``log`` when given), fail if it
    fails; its wall time in seconds and its peak resident memory in GiB (the child's own maximum
    RSS, from wait4)."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as sink:
        child = subprocess.Popen([sys.executable, "-m", *args],
                                 stdout=sink if log else None, stderr=sink if log else None)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode and log:
        raise SystemExit(f"python -m {' '.join(args)} failed (exit {child.returncode}); see {log}")
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def timed(*args: str, log: Path | None = None) -> float:
    """Run ``python -m args`` (a real CLI step), fail if it fails; its wall time in seconds."""
    return measured(*args, log=log)[0]
