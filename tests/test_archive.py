import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import cli.zoo
from modelzoo import open_zoo
from modelzoo.archive import validate_archive, writing
from modelzoo.archive.export import export_safetensors, load_safetensors_state
from modelzoo.data import create_dataset
from modelzoo.errors import ZooError
from modelzoo.generate import generate
from modelzoo.specs import parse_spec
from modelzoo.train.single import evaluate
from tests.conftest import ROOT, invoke_cli, run_cli, tetris_spec


def shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.h5"))}


def test_open_zoo_api(tetris_zoo):
    zoo = open_zoo(tetris_zoo)
    assert len(zoo) == 8 and zoo.complete and zoo.epochs == [0, 1, 2]
    weights = zoo.weights()
    assert weights.shape == (8, 3, 100) and weights.dtype == np.float32
    assert np.array_equal(zoo.weights(epochs=[2])[:, 0], weights[:, 2])
    assert np.array_equal(zoo.flat(5, 1), weights[5, 1])
    table = zoo.metadata
    assert len(table) == 24 and {"model", "epoch", "seed", "activation", "test_acc",
                                 "gap"} <= set(table.columns)
    assert zoo.spec.name == "test-tetris"
    splits = zoo.split_models()
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(8))
    ds = zoo.dataset("train", epochs=[1, 2], properties=("test_acc", "epoch"))
    w, p = ds[1]
    assert w.shape == (100,) and p[1] == 2 and len(ds) == 2 * len(splits["train"])
    with pytest.raises(ZooError, match="epoch 7 is not stored"):
        zoo.flat(0, 7)


def test_same_spec_gives_bit_identical_archives(tetris_zoo, tmp_path):
    generate(parse_spec(tetris_spec()), tmp_path / "again", shard_size=3, population_size=1)
    assert shard_bytes(tmp_path / "again") == shard_bytes(tetris_zoo)


def test_populations_take_models_across_shards(tmp_path, monkeypatch):
    """On the CPU each group's models queue across shards and train in full populations (only a
    group's last one is padded), shards written once all their models are trained; the archive
    holds what training shard by shard gives, bit for bit."""
    import modelzoo.generate
    import modelzoo.train.stream
    from modelzoo.train import load_data, train_configs

    spec = parse_spec(tetris_spec(factors={"seed": {"range": [1, 13]},
                                           "activation": ["tanh", "relu"]}))  # 2 groups, mixed
    calls = []
    monkeypatch.setattr(modelzoo.train.stream, "train_configs", lambda spec, configs, *args, **kw:
                        calls.append(len(configs)) or train_configs(spec, configs, *args, **kw))
    written = []
    monkeypatch.setattr(modelzoo.generate.ArchiveWriter, "write_shard",
                        lambda self, start, stop, runs, real=modelzoo.generate.ArchiveWriter
                        .write_shard: written.append(start) or real(self, start, stop, runs))
    out = generate(spec, tmp_path / "zoo", shard_size=5, population_size=4)
    # shard by shard: 10 populations (each shard holds 2-3 models of each group); across: 6 of 4
    assert calls == [4] * 6 and written == [0, 5, 10, 15, 20]
    data, configs = load_data(spec), spec.configs()
    with open_zoo(out) as zoo:
        weights, metrics = zoo.weights(), zoo.metrics()
    for start in range(0, 24, 5):
        runs = train_configs(spec, configs[start:start + 5], data, "cpu", 4)
        for i, run in enumerate(runs, start):
            assert np.array_equal(weights[i], run.states), i
            assert np.array_equal(metrics["test_acc"][i], run.metrics["test_acc"]), i


def test_loaded_model_reproduces_stored_test_accuracy(tetris_zoo):
    zoo = open_zoo(tetris_zoo)
    data = create_dataset("tetris")
    table = zoo.metadata.set_index(["model", "epoch"])
    for model in (0, 5):
        _, acc = evaluate(zoo.model(model, 2), data.test)
        assert acc == pytest.approx(table.loc[(model, 2), "test_acc"], abs=1e-6)


def test_killed_generation_resumes_to_the_same_archive(tetris_zoo, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tetris_spec(), sort_keys=False))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cli.zoo", "generate", str(spec), "--out", str(out),
           "--shard-size", "3", "--population-size", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "shards" / "shard-00000.h5").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) < 3
    assert validate_archive(out) == []  # what is there is sound
    # the killed run's lock is released by the OS: the next run takes it over and finishes
    result = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert shard_bytes(out) == shard_bytes(tetris_zoo)
    assert not (out / ".partial").exists() and not (out / ".lock").exists()
    done = json.loads((out / "manifest.json").read_text())
    assert done["complete"] and done["shards"] == json.loads(
        (tetris_zoo / "manifest.json").read_text())["shards"]


def test_kill_9_at_random_points_loses_nothing(tetris_zoo, tmp_path):
    """Killed again and again at seeded random moments (before the manifest, mid-shard, between
    shards), each rerun goes on from what is there; the end is the uninterrupted archive."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tetris_spec(), sort_keys=False))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cli.zoo", "generate", str(spec), "--out", str(out),
           "--shard-size", "3", "--population-size", "1"]
    rng = np.random.default_rng(11)

    def shards_written() -> int:
        try:
            return len(json.loads((out / "manifest.json").read_text())["shards"])
        except (OSError, ValueError):
            return -1  # no manifest yet

    # each run is killed a seeded random moment after it has written `done` shards (-1: before
    # its manifest exists), so the kills land before, inside and between shard writes
    for done in (-1, 0, 0, 1, 1, 2):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while shards_written() < done and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (out / "manifest.json").exists():
            assert validate_archive(out) == []  # what a kill leaves is sound
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert shard_bytes(out) == shard_bytes(tetris_zoo)
    assert (out / "metadata.csv").read_bytes() == (tetris_zoo / "metadata.csv").read_bytes()
    assert not (out / ".partial").exists() and not (out / ".lock").exists()


def test_one_writer_at_a_time_and_a_dead_writers_lock_is_taken_over(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tetris_spec(), sort_keys=False))
    out = tmp_path / "zoo"
    cmd = ("cli.zoo", "generate", str(spec), "--out", str(out))
    with writing(out):  # another writer holds the archive
        busy = run_cli(*cmd)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1
    assert "being written by another process" in busy.stderr
    assert not (out / "manifest.json").exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from modelzoo.archive import writing\n"
                               f"with writing({str(out)!r}):\n"
                               "    print('held', flush=True); time.sleep(600)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)  # killed while holding the lock: .lock stays behind
    holder.wait()
    assert (out / ".lock").exists()
    done = run_cli(*cmd)
    assert done.returncode == 0, done.stderr
    assert validate_archive(out) == [] and not (out / ".lock").exists()


def test_rerun_of_a_different_spec_is_refused(tetris_zoo):
    with pytest.raises(ZooError, match="different zoo"):
        generate(parse_spec(tetris_spec(name="other")), tetris_zoo)


def test_corrupted_byte_is_caught(tetris_zoo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tetris_zoo, copy)
    shard = copy / "shards" / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_cli("cli.zoo", "validate", str(copy))
    assert result.returncode == 1
    assert "shards/shard-00001.h5: sha256 mismatch" in result.stdout
    assert run_cli("cli.zoo", "validate", str(tetris_zoo)).returncode == 0


def test_info_json_and_text(tetris_zoo):
    result = run_cli("cli.zoo", "info", str(tetris_zoo), "--json")
    info = json.loads(result.stdout)
    assert info["models"] == 8 and info["states"] == 3 and info["params"] == 100
    assert info["factors"]["activation"] == {"tanh": 4, "relu": 4}
    assert [row["epoch"] for row in info["test_acc_per_epoch"]] == [0, 1, 2]
    text = run_cli("cli.zoo", "info", str(tetris_zoo)).stdout
    assert "test accuracy per epoch" in text and "8 models x 3 states" in text
    missing = run_cli("cli.zoo", "info", str(tetris_zoo / "nope"))
    assert missing.returncode == 2 and "manifest.json is missing" in missing.stderr


def test_safetensors_export_round_trip(tetris_zoo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tetris_zoo, copy)
    files = export_safetensors(copy)
    assert len(files) == 8
    zoo = open_zoo(copy)
    state = load_safetensors_state(files[3], epoch=2)
    for name, tensor in zoo.state_dict(3, 2).items():
        assert torch.equal(state[name], tensor)
    from safetensors import safe_open

    with safe_open(str(files[3]), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["seed"] == zoo.config(3).seed
    assert validate_archive(copy) == []
    files[0].write_bytes(files[0].read_bytes()[:-1] + b"\x00")
    assert any("model-00000.safetensors: sha256 mismatch" in p for p in validate_archive(copy))


def test_generate_format_safetensors_and_option_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tetris_spec(factors={"seed": [1, 2]}), sort_keys=False))
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "generate", str(spec), "--out", str(out), "--format",
                     "safetensors")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "safetensors").iterdir()) == \
        ["model-00000.safetensors", "model-00001.safetensors"]
    assert run_cli("cli.zoo", "validate", str(out)).returncode == 0
    bad = run_cli("cli.zoo", "generate", str(spec), "--out", str(tmp_path / "x"), "--backend",
                  "spark")
    assert bad.returncode == 2 and "use local or ray" in bad.stderr
    assert bad.stderr.count("\n") == 1
    options = [("--format", "npz", "use hdf5 or safetensors")]
    if not torch.cuda.is_available():
        options.append(("--device", "cuda", "no CUDA device"))
    for option, value, message in options:  # in this process: the same checks, no start-up
        bad = invoke_cli(cli.zoo.app, "generate", str(spec), "--out", str(tmp_path / "x"),
                         option, value)
        assert bad.exit_code == 2 and message in bad.stderr
    assert not (tmp_path / "x").exists()


def test_a_stored_state_that_does_not_fit_the_model_is_one_error(tetris_zoo, tmp_path):
    """Loading is strict: a layout entry the model lacks, or a model tensor the layout lacks, is
    one error naming the key (it used to be skipped silently)."""
    import shutil
    from dataclasses import replace

    from modelzoo.archive.layout import Layout
    from modelzoo.models import create_model

    net = create_model("tetris_mlp")
    layout = Layout.of(net)
    renamed = Layout([replace(layout.entries[0], name="fc0.weight"), *layout.entries[1:]])
    with pytest.raises(ZooError, match="fc1.weight is missing from the stored state"):
        renamed.load_into(net, np.zeros(layout.size, np.float32))
    copy = tmp_path / "copy"
    shutil.copytree(tetris_zoo, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["layout"][0]["name"] = "fc0.weight"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with open_zoo(copy) as zoo, pytest.raises(ZooError, match="fc1.weight is missing"):
        zoo.model(0, zoo.epochs[-1])
