"""The Ray backend (local instance, 2 workers) writes the same archive as the local backend, also
when a worker is killed in the middle of a task (the task-attempt trace shows the retry); tasks
run side by side when CPUs allow (their traced begin/end times overlap); on a CPU a task trains a
population planned across shards; a head started separately is joined; a missing Ray is one
error line. Ray is installed in CI (make setup), so these tests
fail rather than skip there."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import importlib.util

import pytest

from modelzoo.archive import validate_archive
from modelzoo.generate import generate
from modelzoo.specs import parse_spec
from tests.conftest import tetris_spec

# CI installs Ray (make setup): a missing Ray fails here instead of skipping. Not imported here:
# joining a cluster must set Ray's authentication mode before Ray is first imported.
assert importlib.util.find_spec("ray") is not None, "Ray is not installed: pip install -e '.[ray]'"

# two groups (batch size) of 16 models; with 4 models per shard, two populations of 16
TRAINING = {"epochs": 6, "batch_size": 10, "optimizer": "adam", "lr": 0.01}
FACTORS = {"batch_size": [10, 20], "seed": {"range": [1, 9]}, "dropout": [0.0, 0.2]}
SPEC = tetris_spec(training=TRAINING, factors=FACTORS)


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.h5"))}


def shard_workers() -> list[int]:
    """PIDs of Ray worker processes currently running a training task."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"ray::train_models" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def attempts(trace: Path) -> list[dict]:
    """Task attempts from the trace: models, pid, begin time and end time (None: it died)."""
    runs: dict[tuple, dict] = {}
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        key = (tuple(event["models"]), event["pid"])
        if event["event"] == "begin":
            runs[key] = {"models": event["models"], "pid": event["pid"],
                         "begin": event["time"], "end": None}
        else:
            runs[key]["end"] = event["time"]
    return sorted(runs.values(), key=lambda a: a["begin"])


@pytest.fixture(scope="module")
def local_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "zoo"
    generate(parse_spec(SPEC), out, shard_size=4)
    return out


def test_ray_archive_equals_local_even_when_a_worker_dies(local_zoo, tmp_path, monkeypatch):
    out = tmp_path / "ray"
    trace = tmp_path / "attempts.jsonl"
    monkeypatch.setenv("MODELZOO_RAY_TRACE", str(trace))
    killed = []
    finished = threading.Event()

    def kill_one_worker():  # a worker whose shard has begun (traced) and not yet ended
        while not finished.is_set() and not killed:
            try:
                tried = attempts(trace) if trace.exists() else []
            except ValueError:  # a line being written
                tried = []
            running = set(shard_workers())
            inside = [a["pid"] for a in tried if a["end"] is None and a["pid"] in running]
            if inside:
                os.kill(inside[-1], signal.SIGKILL)
                killed.append(inside[-1])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        generate(parse_spec(SPEC), out, shard_size=4, backend="ray", ray_cpus=2)
    finally:
        finished.set()
        killer.join()
    assert killed, "no shard task was seen running"
    tried = attempts(trace)
    died = [a for a in tried if a["pid"] == killed[0]]
    assert len(died) == 1 and died[0]["end"] is None, "the killed worker was not inside a task"
    retries = [a for a in tried if a["models"] == died[0]["models"] and a["pid"] != killed[0]]
    assert len(retries) == 1 and retries[0]["begin"] > died[0]["begin"]
    assert retries[0]["end"] is not None, "the task of the killed worker was not retried"
    assert all(a["end"] for a in tried if a is not died[0])
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


def test_tasks_run_side_by_side_with_one_thread_each(tmp_path, monkeypatch):
    """Each task asks as many CPUs as it has threads: 1 thread per task on 2 CPUs runs two
    tasks at the same time (their traced begin/end intervals overlap). Each task is one group's
    population of 16 models, across 4 shards; the archive equals the local backend's. Tasks of
    20 epochs (3-5 s) outlast the start of a second worker process on a loaded machine
    (with 6, about 1.5 s, the second task once began after the first had ended)."""
    spec = parse_spec(tetris_spec(training={**TRAINING, "epochs": 20}, factors=FACTORS))
    local = generate(spec, tmp_path / "local", shard_size=4)
    trace = tmp_path / "attempts.jsonl"
    monkeypatch.setenv("MODELZOO_RAY_TRACE", str(trace))
    out = generate(spec, tmp_path / "ray", shard_size=4, backend="ray",
                   ray_cpus=2, task_threads=1)
    tried = attempts(trace)
    assert sorted(a["models"] for a in tried) == [list(range(16)), list(range(16, 32))]
    assert all(a["end"] for a in tried)
    assert tried[1]["begin"] < tried[0]["end"], f"the two tasks did not overlap: {tried}"
    assert validate_archive(out) == []
    assert shard_bytes(out) == shard_bytes(local)  # 1 thread: same bytes for these models


def test_tasks_take_populations_across_shards_up_to_the_shard_size():
    """Two groups (batch size) alternate model by model, 24 models in shards of 5: a task per
    group's population (12 models, one padded population each: 32 models trained) instead of
    a task per shard (5 shards x 2 groups, each padded to 16: 160). Populations stop at the
    shard size rounded up to 16, or at --population-size; GPU zoos and zoos that do not train
    as populations keep one task per shard."""
    from modelzoo.archive import shard_ranges
    from modelzoo.backends import task_models
    from modelzoo.data import create_dataset

    spec = parse_spec(tetris_spec(factors={"seed": {"range": [1, 13]}, "batch_size": [10, 20]}))
    data = create_dataset("tetris")
    pending = shard_ranges(24, 5)
    assert task_models(spec, pending, 5, data, "cpu", None) == [list(range(0, 24, 2)),
                                                                  list(range(1, 24, 2))]
    assert task_models(spec, pending, 5, data, "cpu", 4) == [
        [0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15], [16, 18, 20, 22],
        [17, 19, 21, 23]]
    by_shard = [list(range(start, stop)) for start, stop in pending]
    assert [len(t) for t in task_models(spec, shard_ranges(24, 2), 2, data, "cpu", None)] == \
        [12, 12]  # 2-model shards: the cap rounds up to 16 models, more than a group holds
    many = parse_spec(tetris_spec(factors={"seed": {"range": [1, 41]}}))
    assert [len(t) for t in task_models(many, shard_ranges(40, 10), 10, data, "cpu", None)] == \
        [16, 16, 8]
    assert task_models(spec, pending, 5, data, "cuda", None) == by_shard
    assert task_models(spec, pending, 5, data, "cpu", 1) == by_shard


@pytest.mark.slow  # about 50 s on 2 cores (mostly the head's start): run by `make bench`
def test_address_joins_a_head_started_separately(local_zoo, tmp_path):
    """``--address`` joins a head started with ``ray start --head`` in its own process group
    (stopped at the end): the archive equals the local one."""
    import socket
    import subprocess
    import sys

    # where the head listens (Ray maps 127.0.0.1 to it as well); asked in a child process, since
    # this one must not import Ray before joining
    ip = subprocess.run([sys.executable, "-c", "import ray.util; "
                         "print(ray.util.get_node_ip_address())"], capture_output=True, text=True,
                        timeout=120).stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind((ip, 0))
        port = s.getsockname()[1]
    ray_cli = str(Path(sys.executable).parent / "ray")
    # --block keeps the head in one process group of ours, so the test stops only its own cluster
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                socket.create_connection((ip, port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and head.poll() is None, "the head did not start"
                time.sleep(0.5)
        out = generate(parse_spec(SPEC), tmp_path / "joined", shard_size=4, backend="ray",
                       address=f"{ip}:{port}")
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert validate_archive(out) == []
    assert shard_bytes(out) == shard_bytes(local_zoo)


def test_a_missing_ray_is_one_error_line(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    code = ("import sys; sys.modules['ray'] = None\n"
            "from cli.zoo import main\n"
            f"sys.argv = ['zoo', 'generate', {str(spec)!r}, '--out', {str(tmp_path / 'z')!r},"
            " '--backend', 'ray']\n"
            "main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "needs Ray" in result.stderr and "Traceback" not in result.stderr

