"""Shared fixtures: tiny specs and zoos generated once per session on offline data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelzoo.generate import generate
from modelzoo.runtime import keep_freed_memory
from modelzoo.specs import parse_spec

ROOT = Path(__file__).resolve().parents[1]
keep_freed_memory()  # the malloc settings the command-line tools run with


def tetris_spec(**overrides) -> dict:
    spec = {"name": "test-tetris", "architecture": {"name": "tetris_mlp"},
            "dataset": {"name": "tetris"},
            "training": {"epochs": 2, "batch_size": 10, "optimizer": "adam", "lr": 0.01},
            "factors": {"seed": {"range": [1, 5]}, "activation": ["tanh", "relu"]}}
    spec.update(overrides)
    return spec


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m cli.<tool> args`` and capture its output (``env`` adds variables)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def tetris_zoo(tmp_path_factory) -> Path:
    """A complete 8-model Tetris zoo (2 epochs), written in 3 shards."""
    out = tmp_path_factory.mktemp("zoo") / "tetris"
    generate(parse_spec(tetris_spec()), out, shard_size=3, population_size=1)
    return out
