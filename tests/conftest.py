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


def invoke_cli(app, *args: str):
    """Run a typer ``app`` in this process (no interpreter start-up, torch already imported) and
    check what a user would see: a refusal is exit 2 with one 'error:' line on stderr, and no
    command ends in a traceback. For option matrices, refusals and reruns (commands that seed no
    global generator); each command keeps a ``run_cli`` test in a real process too."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args}: {type(result.exception).__name__}: {result.exception}"
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="session")
def tetris_zoo(tmp_path_factory) -> Path:
    """A complete 8-model Tetris zoo (2 epochs), written in 3 shards."""
    out = tmp_path_factory.mktemp("zoo") / "tetris"
    generate(parse_spec(tetris_spec()), out, shard_size=3, population_size=1)
    return out
