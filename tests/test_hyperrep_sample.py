"""hyperrep sample: seeded samplers, decoding that keeps a model's function, BatchNorm recalibration,
fine-tuning from given weights, and the CLI writing a valid archive plus a report."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from hyperrep.sample import (
    anchor_rows,
    decode_latents,
    draw_latents,
    recalibrate_batchnorm,
    reconstruct,
)
from hyperrep.config import TrainConfig
from hyperrep.run import open_run_tokens
from hyperrep.train import train
from modelzoo import open_zoo
from modelzoo.generate import generate
from modelzoo.train import load_data, train_configs
from modelzoo.specs import parse_spec
from tests.conftest import invoke_cli, run_cli, tetris_spec

# Reconstruction-heavy small autoencoder on canonicalised weights (every model aligned to one
# reference, no permutation augmentation): enough to decode Tetris MLPs that still classify.
SMALL = dict(mode="compression", epochs=300, batch_size=32, d_model=64, heads=2,
             encoder_blocks=1, decoder_blocks=1, latent=64, proj_dim=8, permutations=0,
             canonical=True, lr=2e-3, gamma=0.0, noise=0.0, erase_p=0.0)
# decode(encode(model)) of the training models keeps their mean test accuracy within this
# (measured: 0.720 -> 0.705, a drop of 0.015)
RECONSTRUCTION_BOUND = 0.05


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("sz") / "zoo"
    spec = tetris_spec(name="tetris-seed-test",
                       training={"epochs": 4, "batch_size": 10, "optimizer": "adam", "lr": 0.01,
                                 "save_epochs": [0, 2, 4]},
                       factors={"seed": {"range": [1, 41]}})
    generate(parse_spec(spec), out)
    return out


@pytest.fixture(scope="module")
def run(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("srun") / "run"
    train(zoo, out, TrainConfig(**SMALL, zoo_epochs=[2, 4]))
    return out


def test_samplers_are_seeded_and_bounded():
    fit = np.random.default_rng(0).uniform(-0.9, 0.9, (30, 8)).astype(np.float32)
    for sampler in ("kde-anchor", "kde", "uniform"):
        for joint in (False, True):
            a = draw_latents(sampler, fit, fit, 5, 0.01, joint, seed=3)
            b = draw_latents(sampler, fit, fit, 5, 0.01, joint, seed=3)
            c = draw_latents(sampler, fit, fit, 5, 0.01, joint, seed=4)
            assert a.shape == (5, 8) and np.array_equal(a, b) and not np.array_equal(a, c)
            assert np.abs(a).max() <= 1.0
    # per-dimension KDE with a tiny bandwidth draws each coordinate from a training value
    per_dim = draw_latents("kde", fit, fit, 4, 1e-6, False, seed=0)
    assert all(np.abs(fit[:, d][:, None] - per_dim[:, d][None]).min(0).max() < 1e-4
               for d in range(8))


def test_anchors_are_the_top_quantile():
    accuracy = np.arange(20, dtype=float) / 20
    rows = np.arange(0, 20, 2)  # the training rows
    anchors = anchor_rows(accuracy, rows, 0.7)
    assert set(anchors) <= set(rows)
    assert accuracy[anchors].min() >= np.quantile(accuracy[rows], 0.7)
    assert len(anchors) == 3


def test_batchnorm_recalibration_sets_the_data_statistics():
    torch.manual_seed(0)  # batch statistics average to the data's within 1 % for this draw
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    images = torch.randn(64, 1, 8, 8)
    net[1].running_mean.fill_(5.0)
    assert recalibrate_batchnorm(net, images, batch=64)
    features = net[0](images).detach()
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(net[1].running_var, features.var((0, 2, 3)), rtol=1e-4)
    assert recalibrate_batchnorm(net, images, batch=16)  # batches: averaged batch statistics
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(net[1].running_var, features.var((0, 2, 3)), rtol=1e-2)
    assert not net.training
    assert not recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2)), torch.randn(4, 2))


def test_finetuning_starts_from_the_given_weights(zoo):
    z = open_zoo(zoo)
    spec = z.spec
    data = load_data(spec)
    starts = np.stack([z.flat(m, 4) for m in (0, 1, 2)])
    configs = [z.config(m).model_copy(update={"epochs": 1, "save_epochs": None}) for m in (0, 1, 2)]
    pop = train_configs(spec, configs, data, initial=starts)
    alone = train_configs(spec, configs, data, population_size=1, initial=starts)
    stored = z.metadata.set_index(["model", "epoch"])
    for m, p, a in zip((0, 1, 2), pop, alone):
        assert np.array_equal(p.states[0], starts[m])  # epoch 0 = the given state
        assert p.metrics["test_acc"][0] == pytest.approx(stored.loc[(m, 4), "test_acc"], abs=1e-6)
        assert np.abs(p.states[1] - a.states[1]).max() < 1e-5
        assert not np.array_equal(p.states[1], p.states[0])
    z.close()


def test_decode_of_encode_keeps_accuracy(zoo, run):
    models = json.loads((run / "config.json").read_text())["splits"]["train"]
    original, decoded = reconstruct(run, zoo, models, 4)
    z = open_zoo(zoo)
    data = load_data(z.spec)
    configs = [z.config(m).model_copy(update={"epochs": 0, "save_epochs": None}) for m in models]
    acc_orig = [r.metrics["test_acc"][0] for r in train_configs(z.spec, configs, data,
                                                                  initial=original)]
    acc_dec = [r.metrics["test_acc"][0] for r in train_configs(z.spec, configs, data,
                                                                 initial=decoded)]
    z.close()
    drop = float(np.mean(acc_orig) - np.mean(acc_dec))
    assert np.mean(acc_orig) > 0.6
    assert drop <= RECONSTRUCTION_BOUND, (np.mean(acc_orig), np.mean(acc_dec))


def test_decoded_latents_have_the_zoo_shape(zoo, run):
    model, data, _ = open_run_tokens(run, zoo)
    flat = decode_latents(model, np.zeros((3, 64), np.float32), data)
    data.zoo.close()
    assert flat.shape == (3, 100) and np.isfinite(flat).all()


def test_cli_sample_writes_a_valid_archive_and_report(zoo, run, tmp_path):
    out = tmp_path / "samples"
    result = run_cli("cli.hyperrep", "sample", str(run), str(zoo), "--n", "4", "--out", str(out),
                     "--finetune-epochs", "1", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "B_T" in result.stdout and "kde-anchor" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["anchors_mean_acc"] <= 1
    accuracy = report["accuracy"]["tetris"]
    assert set(accuracy) == {"kde-anchor", "kde", "uniform", "B_T", "B_F"}
    assert all(np.array(v).shape == (2, 4) for v in accuracy.values())  # epochs 0..1 x models
    distance = report["nearest_train_distance"]
    assert set(distance) == {"kde-anchor", "kde", "uniform", "B_F"}
    assert all(len(v) == 4 and min(v) > 0 for v in distance.values())
    assert (out / "report.png").stat().st_size > 0
    samples = open_zoo(out)
    assert len(samples) == 12 and samples.epochs == [0, 1]
    assert sorted(samples.metadata["sampler"].unique()) == ["kde", "kde-anchor", "uniform"]
    table = samples.metadata.set_index(["sampler", "epoch"])["test_acc"]
    assert np.allclose(np.sort(table.loc[("kde-anchor", 0)].to_numpy()),
                       np.sort(accuracy["kde-anchor"][0]))
    # the zero-shot validation accuracies (what a sweep chooses on) are the archive's epoch-0 ones
    val = samples.metadata.set_index(["sampler", "epoch"])["val_acc"]
    assert np.allclose(np.sort(val.loc[("kde-anchor", 0)].to_numpy()),
                       np.sort(report["zero_shot_val_accuracy"]["kde-anchor"]))
    assert set(report["zero_shot_val_accuracy"]) == set(accuracy)
    assert 0 < report["anchors_mean_val_acc"] <= 1
    samples.close()
    assert run_cli("cli.zoo", "validate", str(out)).returncode == 0
    assert len(list((out / "safetensors").glob("*.safetensors"))) == 12
    import cli.hyperrep

    again = invoke_cli(cli.hyperrep.app, "sample", str(run), str(zoo), "--n", "4", "--out",
                       str(out))  # in this process: one error line (invoke_cli checks)
    assert again.exit_code == 2


def test_cli_sample_rejects_bad_options(zoo, run, tmp_path):
    """One refusal in a real process, the rest of the matrix in this one (``invoke_cli``)."""
    import cli.hyperrep

    command = ["sample", str(run), str(zoo), "--n", "4", "--out", str(tmp_path / "x")]
    result = run_cli("cli.hyperrep", *command, "--sampler", "gan")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    for args in (["--quantile", "1.5"], ["--keep-best", "9"], ["--bandwidth", "wide"],
                 ["--dataset", "tetris-nope"], ["--dataset", "tetris"]):
        assert invoke_cli(cli.hyperrep.app, *command, *args).exit_code == 2, args
    assert not (tmp_path / "x").exists()


def test_keep_best_and_transfer_to_another_data_set(zoo, run, tmp_path):
    """--keep-best keeps the K best draws by zero-shot validation accuracy; --dataset fine-tunes
    the same samples and baselines on another data set of the same shape, reported beside."""
    from hyperrep.sample import SampleConfig, sample
    from modelzoo.data import DATASETS
    from modelzoo.data.offline import read_tetris
    from modelzoo.data.registry import RawData, Split, register_dataset

    if "tetris_mirrored" not in DATASETS:
        @register_dataset("tetris_mirrored", val_size=0.15, source="test", needs_root=False)
        def read_mirrored() -> RawData:
            raw = read_tetris()
            return RawData(train=Split(raw.train.x.flip(-1), raw.train.y),
                           test=Split(raw.test.x.flip(-1), raw.test.y), classes=raw.classes)

    cfg = SampleConfig.of(n=4, keep_best=2, samplers=("kde-anchor",), finetune_epochs=1,
                          datasets=["tetris_mirrored"], seed=3)
    report = sample(run, zoo, tmp_path / "kept", cfg)
    assert report["n"] == 2 and report["selection"].startswith("best 2 of 4")
    assert set(report["accuracy"]) == {"tetris", "tetris_mirrored"}
    for accuracy in report["accuracy"].values():
        assert set(accuracy) == {"kde-anchor", "B_T", "B_F"}
        assert all(np.array(v).shape == (2, 2) for v in accuracy.values())
    with open_zoo(tmp_path / "kept") as kept:
        assert len(kept) == 2  # the archive holds the kept samples, on the zoo's own data
    # the kept draws are the best of the four on validation: rerun without --keep-best
    everything = sample(run, zoo, tmp_path / "all", SampleConfig.of(
        n=4, samplers=("kde-anchor",), finetune_epochs=0, seed=3))
    with open_zoo(tmp_path / "all") as drawn, open_zoo(tmp_path / "kept") as kept:
        val = np.sort(drawn.metadata[drawn.metadata.epoch == 0]["val_acc"].to_numpy())
        kept_val = np.sort(kept.metadata[kept.metadata.epoch == 0]["val_acc"].to_numpy())
        assert np.allclose(kept_val, val[-2:])
    assert everything["n"] == 4


def test_the_2022_sampler_takes_one_anchor_per_draw():
    """As the published code samples (one random state for every dimension's KDE): each draw is
    one anchor plus the same offset in every dimension; the per-dimension mode mixes anchors."""
    anchors = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 8)).astype(np.float32)
    draws = draw_latents("kde-2022", anchors, anchors, 50, 0.01, True, seed=4)
    for draw in draws:
        offsets = draw[None] - anchors  # [anchors, dims]
        assert (offsets.std(axis=1) < 1e-5).any()  # one anchor, moved along the diagonal
    mixed = draw_latents("kde", anchors, anchors, 50, 0.01, False, seed=4)
    assert not all(((d[None] - anchors).std(axis=1) < 1e-5).any() for d in mixed)
    assert np.array_equal(draws, draw_latents("kde-2022", anchors, anchors, 50, 0.01, True, 4))



def test_sampling_a_batchnorm_zoo_recalibrates_its_statistics(tmp_path):
    """A (narrow) ResNet-18 zoo: sampled models get BatchNorm statistics measured on training
    images, so measuring them again changes nothing; the sample archive is sound."""
    import torch

    from hyperrep.sample import SampleConfig, recalibrate_batchnorm, sample
    from modelzoo.archive import validate_archive
    from modelzoo.generate import generate
    from modelzoo.specs import parse_spec

    spec = tetris_spec(name="tiny-resnet",
                       architecture={"name": "resnet18", "in_channels": 1, "num_classes": 4,
                                     "width": 2},
                       training={"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.01,
                                 "activation": "relu", "init": "kaiming_uniform",
                                 "train_fraction": 0.3},
                       factors={"seed": {"range": [1, 8]}})
    zoo = generate(parse_spec(spec), tmp_path / "zoo")
    run = tmp_path / "run"
    train(zoo, run, TrainConfig(mode="compression", epochs=2, canonical=True, permutations=0,
                                d_model=32, heads=2, encoder_blocks=1, decoder_blocks=1,
                                latent=16, batch_size=4))
    out = tmp_path / "samples"
    sample(run, zoo, out, SampleConfig.of(n=2, samplers=("kde-anchor",), finetune_epochs=0))
    assert validate_archive(out) == []
    images = load_data(parse_spec(spec)).train.x
    with open_zoo(out) as samples:
        for m in samples.model_ids:
            net = samples.model(m, 0)
            stored = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
            assert stored and recalibrate_batchnorm(net, images)
            again = {k: v for k, v in net.state_dict().items() if "running" in k}
            assert all(torch.allclose(stored[k], again[k], atol=1e-5) for k in stored)
