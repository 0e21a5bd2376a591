"""The Ray backend (local instance, 2 workers) writes the same archive as the local backend, also
when a worker is killed in the middle of a shard."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from modelzoo.archive import validate_archive
from modelzoo.generate import generate
from modelzoo.specs import parse_spec
from tests.conftest import tetris_spec

pytest.importorskip("ray")

SPEC = tetris_spec(training={"epochs": 6, "batch_size": 10, "optimizer": "adam", "lr": 0.01},
                   factors={"seed": {"range": [1, 9]}, "dropout": [0.0, 0.2]})


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.h5"))}


def shard_workers() -> list[int]:
    """PIDs of Ray worker processes currently running a shard task."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"ray::train_shard" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def local_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "zoo"
    generate(parse_spec(SPEC), out, shard_size=4)
    return out


def test_ray_archive_equals_local_even_when_a_worker_dies(local_zoo, tmp_path):
    out = tmp_path / "ray"
    killed = []

    def kill_one_worker():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            pids = shard_workers()
            if pids:
                time.sleep(0.3)  # let it get into the shard
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    generate(parse_spec(SPEC), out, shard_size=4, backend="ray", ray_cpus=2)
    killer.join()
    assert killed, "no shard task was seen running"
    assert validate_archive(out) == []
    assert shard_bytes(out) == shard_bytes(local_zoo)


def test_killed_ray_driver_resumes_to_the_same_archive(local_zoo, tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "cli.zoo", "generate", str(spec), "--out", str(out),
           "--shard-size", "4", "--backend", "ray", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: the driver and its Ray
    deadline = time.time() + 180
    while not list((out / "shards").glob("*.h5")) if (out / "shards").exists() else True:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and validate_archive(out) == []
    result = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert shard_bytes(out) == shard_bytes(local_zoo)


def test_ray_archive_of_a_batchnorm_task_zoo_equals_local(tmp_path):
    """U-Net with BatchNorm and transposed convolutions: bits depend on the thread count, so the
    tasks run with the driver's."""
    spec = parse_spec({"name": "tiny-plants", "task": {"name": "multitask"},
                       "architecture": {"name": "multitask_plant", "width": 2, "levels": 1},
                       "dataset": {"name": "synthetic_plants", "options": {"n": 120, "size": 16}},
                       "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3,
                                    "activation": "relu", "init": "kaiming_uniform"},
                       "factors": {"seed": [1, 2], "task_weighting": ["dynamic", "fixed"]}})
    local = generate(spec, tmp_path / "local", shard_size=2)
    remote = generate(spec, tmp_path / "ray", shard_size=2, backend="ray", ray_cpus=2)
    assert shard_bytes(remote) == shard_bytes(local)
