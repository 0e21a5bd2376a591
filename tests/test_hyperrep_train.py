"""A small but real hyperrep path: training lowers the loss, resume continues, probes run on real
embeddings, and the CLI reports bad input in one line."""

import json

import numpy as np
import pytest

from hyperrep.config import TrainConfig
from hyperrep.run import embed
from hyperrep.train import train
from modelzoo.generate import generate
from modelzoo.specs import parse_spec
from modelzoo.train.losses import nt_xent
from tests.conftest import ROOT, invoke_cli, run_cli, tetris_spec

SMALL = dict(mode="compression", epochs=6, batch_size=32, d_model=32, heads=2, encoder_blocks=1,
             decoder_blocks=1, latent=16, proj_dim=8, permutations=50, lr=1e-3)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("hz") / "zoo"
    spec = tetris_spec(training={"epochs": 3, "batch_size": 10, "optimizer": "adam", "lr": 0.01},
                       factors={"seed": {"range": [1, 11]}, "activation": ["tanh", "relu"],
                                "lr": [0.01, 0.003]})
    generate(parse_spec(spec), out)
    return out


@pytest.fixture(scope="module")
def run(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(zoo, out, TrainConfig(**SMALL))
    return out


def test_training_lowers_the_loss(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert records[-1]["loss"] < records[0]["loss"]
    assert (run / "model.safetensors").exists() and (run / "checkpoint.pt").exists()


def test_resume_continues_from_the_checkpoint(zoo, run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(Exception, match="another config"):
        train(zoo, copy, TrainConfig(**dict(SMALL, lr=5e-4)))
    train(zoo, copy, TrainConfig(**dict(SMALL, epochs=8)))
    epochs = [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6, 7, 8]


def test_embeddings_are_bounded_and_deterministic(zoo, run):
    a, b = embed(run, zoo), embed(run, zoo)
    assert a["embedding"].shape == (40 * 3, 16)  # 40 models x 3 stored epochs
    assert np.abs(a["embedding"]).max() <= 1.0
    assert np.array_equal(a["embedding"], b["embedding"])


def test_embedding_views_average_out_the_order_of_hidden_units(zoo, run):
    """A permuted copy of a model computes the same function; the orbit-averaged embedding moves
    far less under that permutation than one encoding does."""
    import torch

    from hyperrep.run import encode_views, open_run_tokens

    model, data, _ = open_run_tokens(run, zoo)
    with data.zoo:
        plan = data.permutation_plan()
    x = data.normalised(slice(None))
    moved = x[:, plan.sample(1, torch.Generator().manual_seed(99))[0]]

    def shift(views):
        a, b = (encode_views(model, w, data.tokens, plan, views) for w in (x, moved))
        return float(np.linalg.norm(a - b, axis=1).mean())

    assert shift(16) < 0.5 * shift(1)
    assert embed(run, zoo, views=1)["embedding"].shape == embed(run, zoo)["embedding"].shape


def test_probe_cli_on_real_embeddings(zoo, run, tmp_path):
    out = tmp_path / "probe.json"
    result = run_cli("cli.hyperrep", "probe", str(run), str(zoo), "--json", str(out),
                     "--plot", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    table = json.loads(out.read_text())
    assert {"test_acc", "gap", "epoch", "activation", "lr"} <= set(table)
    for row in table.values():
        assert set(row) - {"kendall_tau"} == {"metric", "W", "S(W)", "S(W) weights", "S(W)+GBT",
                                              "embedding"}
        assert all(np.isfinite(row[k]) for k in ("W", "S(W)", "S(W) weights", "S(W)+GBT",
                                                 "embedding"))
    assert table["activation"]["metric"] == "accuracy"
    assert (tmp_path / "plots" / "predicted_vs_true.png").exists()
    assert "embedding" in result.stdout


def test_cli_errors_are_one_line(tmp_path):
    result = run_cli("cli.hyperrep", "train", str(tmp_path / "nozoo"), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    import cli.hyperrep

    result = invoke_cli(cli.hyperrep.app, "probe", str(tmp_path), str(tmp_path))  # in this process
    assert result.exit_code == 2 and "not a hyperrep run" in result.stderr


def test_nt_xent_prefers_matching_pairs():
    import torch

    z = torch.randn(8, 4)
    assert nt_xent(z, z + 0.01 * torch.randn(8, 4)) < nt_xent(z, torch.randn(8, 4))


def test_a_too_large_decoder_is_one_clear_error():
    from hyperrep.tokenise import build_token_map
    from hyperrep.model import build_autoencoder
    from modelzoo.archive.layout import Layout
    from modelzoo.errors import ZooError
    from modelzoo.models import create_model

    tokens = build_token_map(Layout.of(create_model("resnet18")), 64)
    with pytest.raises(ZooError, match="179,290 tokens"):
        build_autoencoder(TrainConfig(mode="compression"), tokens)


def test_a_permutation_pool_too_large_for_memory_is_refused_up_front(zoo, tmp_path, monkeypatch):
    """500 permutations of a full ResNet-18 would need 44.7 GB of gather indices: the run is
    refused with one line naming the largest pool that fits, and no run folder is left behind."""
    import hyperrep.train
    from modelzoo import open_zoo
    from modelzoo.errors import ZooError

    with open_zoo(zoo) as z:
        n_params = z.n_params
    # memory for 6 indices: half of it (3) may go to the pool
    monkeypatch.setattr(hyperrep.train, "available_memory", lambda: 6 * n_params * 8)
    with pytest.raises(ZooError, match=r"permutations: 500 of .* set permutations to at most 3 "):
        train(zoo, tmp_path / "run", TrainConfig(epochs=1))
    assert not (tmp_path / "run").exists()
    train(zoo, tmp_path / "run", TrainConfig(epochs=1, permutations=0))  # no pool: trains


def test_windowed_training_embeds_whole_models(zoo, tmp_path):
    """Windows of consecutive tokens: the autoencoder's size no longer follows the zoo model's."""
    from hyperrep.tokenise import build_token_map
    from hyperrep.model import build_autoencoder
    from modelzoo.archive.layout import Layout
    from modelzoo.models import create_model

    big = build_token_map(Layout.of(create_model("resnet18")), 64)  # 179,290 tokens, 11 M weights
    model = build_autoencoder(TrainConfig(mode="compression", window=256), big)
    assert sum(p.numel() for p in model.parameters()) < 50_000_000

    out = tmp_path / "windowed"
    train(zoo, out, TrainConfig(**{**SMALL, "window": 4, "epochs": 8}))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert min(r["loss"] for r in records[1:]) < records[0]["loss"]
    embedding = embed(out, zoo)["embedding"]
    assert embedding.shape[1] == SMALL["latent"] and np.isfinite(embedding).all()
    assert np.abs(embedding).max() < 1  # the mean of tanh latents stays in the box
    probe = run_cli("cli.hyperrep", "probe", str(out), str(zoo))
    assert probe.returncode == 0, probe.stderr
    sample = run_cli("cli.hyperrep", "sample", str(out), str(zoo), "--n", "2", "--out",
                     str(tmp_path / "samples"))
    assert sample.returncode == 2 and "encodes windows of 4 tokens" in sample.stderr


def test_probe_warnings_stay_inside_the_probes():
    """The probes silence the sweeps' expected warnings for themselves, not for the process."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from hyperrep.probes import run_probes

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=30)
    split = {"train": np.arange(20), "val": np.arange(20, 25), "test": np.arange(25, 30)}
    before = list(warnings.filters)
    run_probes({"S(W)": x}, {"a": ("r2", y)}, split)
    assert warnings.filters == before
    with pytest.warns(ConvergenceWarning):
        warnings.warn("still reported outside the probes", ConvergenceWarning)


def test_weight_statistics_with_and_without_biases():
    """S(W) has 7 statistics per parameter tensor; the published 2021 variant skips the biases."""
    from hyperrep.probes import weight_statistics
    from modelzoo.archive import Layout
    from modelzoo.models import create_model

    layout = Layout.of(create_model("cnn_s"))  # 5 weight tensors, 5 biases
    flat = np.random.default_rng(0).normal(size=(3, layout.size)).astype(np.float32)
    assert weight_statistics(flat, layout).shape == (3, 70)
    weights_only = weight_statistics(flat, layout, biases=False)
    assert weights_only.shape == (3, 35)
    conv1 = flat[:, :layout.entries[0].size]
    assert np.allclose(weights_only[:, :2], np.stack([conv1.mean(1), conv1.var(1)], 1))


@pytest.mark.parametrize("path", sorted((ROOT / "hyperrep_configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_committed_config_is_a_valid_train_config(path):
    from hyperrep.config import load_train_config

    assert isinstance(load_train_config(path, {}), TrainConfig)
