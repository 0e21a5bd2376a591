"""The README's main job, end to end through the real CLIs, at the quick size CI can afford."""

import json
import subprocess
import sys

from modelzoo.archive import validate_archive
from tests.conftest import ROOT


def test_the_demo_runs_every_step(tmp_path):
    run = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "cli.demo", "--run", str(run), "--quick"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for title in ("generate a zoo", "probe it against W and S(W)", "sample unseen models"):
        assert f"=== {title}" in result.stdout
    assert validate_archive(run / "zoo") == [] and validate_archive(run / "samples") == []
    report = json.loads((run / "samples" / "report.json").read_text())
    assert set(report["accuracy"]["tetris"]) >= {"kde-anchor", "B_T", "B_F"}
    assert "test_acc" in json.loads((run / "probes.json").read_text())
