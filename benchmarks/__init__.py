"""Benchmarks: each script prints ratios against a baseline run in the same process."""

import subprocess
import sys
import time


def timed(*args: str) -> float:
    """Run ``python -m args`` (a real CLI step), fail if it fails; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True)
    return time.perf_counter() - start
