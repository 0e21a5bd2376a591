"""Benchmarks: each script prints ratios against a baseline run in the same process."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def measured(*args: str, log: Path | None = None) -> tuple[float, float]:
    """Run ``python -m args`` (a real CLI step; its output to ``log`` when given), fail if it
    fails; its wall time in seconds and its peak resident memory in GiB (the child's own maximum
    RSS, from wait4)."""
    start = time.perf_counter()
    with open(log, "w") if log else contextlib.nullcontext() as sink:  # None: inherit
        child = subprocess.Popen([sys.executable, "-m", *args], stdout=sink, stderr=sink)
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


def config_with(source: Path | str | None, target: Path, **overrides) -> Path:
    """Write to ``target`` the YAML file ``source`` (a config or spec; None: empty) with the
    top-level ``overrides`` set (a seed, a smaller permutation pool); returns ``target``."""
    keys = (yaml.safe_load(Path(source).read_text()) or {}) if source else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump({**keys, **overrides}))
    return target
