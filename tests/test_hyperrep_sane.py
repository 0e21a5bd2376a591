"""SANE mode: per-token latents, mean-pooled embeddings, standardised tokens, AdamW + OneCycle,
windows with halo embedding, and one run embedding zoos of another model size; the probes'
validation-only protocol."""

import json

import numpy as np
import pytest
import torch

from hyperrep.config import TrainConfig
from hyperrep.probes import probe_split_models, probe_splits, run_probes
from hyperrep.run import embed, halo_windows, open_run_tokens
from hyperrep.train import train
from modelzoo import open_zoo
from modelzoo.errors import ZooError
from modelzoo.generate import generate
from modelzoo.specs import parse_spec
from tests.conftest import tetris_spec

SMALL = dict(mode="sane", epochs=5, batch_size=32, d_model=32, heads=2, encoder_blocks=1,
             decoder_blocks=1, latent=8, permutations=20, lr=3e-3, max_positions=(32, 4, 16),
             pooling="mean")


def tetris_zoo(folder, hidden: int):
    spec = tetris_spec(name=f"tetris-h{hidden}",
                       architecture={"name": "tetris_mlp", "hidden": hidden},
                       training={"epochs": 2, "batch_size": 10, "optimizer": "adam", "lr": 0.01},
                       factors={"seed": {"range": [1, 11]}, "activation": ["tanh", "relu"]})
    return generate(parse_spec(spec), folder)


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    root = tmp_path_factory.mktemp("sane")
    return tetris_zoo(root / "h5", 5), tetris_zoo(root / "h9", 9)


@pytest.fixture(scope="module")
def run(zoos, tmp_path_factory):
    return train(zoos[0], tmp_path_factory.mktemp("run") / "run", TrainConfig(**SMALL))


def test_sane_defaults_apply_only_to_unset_keys():
    cfg = TrainConfig(mode="sane", lr=1e-3)
    assert (cfg.token_size, cfg.latent, cfg.optimizer, cfg.schedule, cfg.standardise,
            cfg.erase_p) == (None, 128, "adamw", "onecycle", True, 0.0)
    assert TrainConfig(mode="sane", token_size=32).token_size == 32
    compression = TrainConfig(mode="compression")
    assert (compression.optimizer, compression.token_size,
            compression.pooling) == ("adam", 64, "mean")
    # the defaults chosen on validation (BENCHMARKS.md): SANE mode read out with S(W) of the
    # token latents
    assert TrainConfig() == TrainConfig(mode="sane", pooling="layer-stats")


def test_sane_run_trains_and_embeds_as_the_mean_token_latent(zoos, run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["mode"] == "sane" and config["model"]["token_size"] == 16  # longest row
    assert np.abs(np.mean(config["layer_shift"])) > 0  # standardised: the mean is subtracted
    model, data, _ = open_run_tokens(run, zoos[0])
    with data.zoo:
        from hyperrep.tokenise import tokenise

        tokens = tokenise(data.normalised(slice(0, 4)), data.tokens)
        with torch.no_grad():
            latents = model.encode(tokens, data.tokens.positions)
    assert latents.shape == (4, 9, 8)  # 5 + 4 rows of the hidden-5 MLP, latent 8 each
    embedding = embed(run, zoos[0], views=1)["embedding"]
    assert np.allclose(embedding[:4], latents.mean(1).numpy(), atol=1e-6)


def test_layer_pooling_rereads_a_finished_run_without_training(zoos, run, tmp_path):
    """pooling: layers (a readout, not a training setting): rerunning train on a finished run with
    it trains nothing and the embedding becomes the per-layer means of the token latents,
    concatenated; weighted by the layers' token counts they average back to the mean pooling.
    pooling: layer-moments adds each layer's std of the token latents beside its mean, and
    layer-stats adds their 1/25/50/75/99th percentiles (as S(W) takes of the weights)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    from safetensors.torch import load_file

    weights = load_file(copy / "model.safetensors")
    train(zoos[0], copy, TrainConfig(**dict(SMALL, pooling="layers")))
    assert all(torch.equal(v, weights[k]) for k, v in load_file(copy / "model.safetensors").items())
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == SMALL["epochs"]
    layers = embed(copy, zoos[0], views=1)["embedding"]
    mean = embed(run, zoos[0], views=1)["embedding"]
    assert layers.shape == (len(mean), 2 * 8)  # two layers of 5 and 4 row-tokens, latent 8
    assert np.allclose((5 * layers[:, :8] + 4 * layers[:, 8:]) / 9, mean, atol=1e-5)
    # layer-moments: each layer's mean beside the std of its token latents
    train(zoos[0], copy, TrainConfig(**dict(SMALL, pooling="layer-moments")))
    moments = embed(copy, zoos[0], views=1)["embedding"]
    assert moments.shape == (len(mean), 2 * 2 * 8)
    assert np.allclose(moments[:, :8], layers[:, :8])
    assert np.allclose(moments[:, 16:24], layers[:, 8:])
    model, data, _ = open_run_tokens(copy, zoos[0])
    with data.zoo, torch.no_grad():
        from hyperrep.tokenise import tokenise

        latents = model.encode(tokenise(data.normalised(slice(0, 4)), data.tokens),
                               data.tokens.positions)
    assert np.allclose(moments[:4, 8:16], latents[:, :5].std(1, correction=0).numpy(), atol=1e-5)
    # layer-stats: per layer the mean, std and 5 percentiles (numpy's) of each latent dimension
    train(zoos[0], copy, TrainConfig(**dict(SMALL, pooling="layer-stats")))
    stats = embed(copy, zoos[0], views=1)["embedding"]
    assert stats.shape == (len(mean), 2 * 7 * 8)
    assert np.allclose(stats[:, :16], moments[:, :16]) and np.allclose(stats[:, 56:72],
                                                                       moments[:, 16:])
    for layer, rows in ((0, slice(0, 5)), (1, slice(5, 9))):
        expected = np.percentile(latents[:, rows].numpy(), (1, 25, 50, 75, 99), axis=1)
        got = stats[:4, 56 * layer + 16:56 * (layer + 1)].reshape(4, 5, 8).transpose(1, 0, 2)
        assert np.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="needs mode: sane"):
        TrainConfig(mode="compression", pooling="layers")


def test_resume_refuses_to_stretch_a_onecycle_schedule(zoos, run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(ZooError, match="OneCycle"):
        train(zoos[0], copy, TrainConfig(**dict(SMALL, epochs=7)))


def test_one_run_embeds_and_probes_a_zoo_of_another_model_size(zoos, run):
    other = embed(run, zoos[1], views=1)
    assert other["embedding"].shape == (20 * 2, 8) and np.isfinite(other["embedding"]).all()
    tables = probe_splits(run, zoos[1], ("val",), views=1)
    assert np.isfinite(tables["val"]["epoch"]["embedding"])


def test_positions_beyond_the_run_tables_are_one_clear_error(zoos, tmp_path):
    small = train(zoos[0], tmp_path / "small", TrainConfig(**dict(SMALL, max_positions=None,
                                                                   epochs=1)))
    with pytest.raises(ZooError, match="max_positions"):
        embed(small, zoos[1])
    compression = train(zoos[0], tmp_path / "comp", TrainConfig(
        mode="compression", epochs=1, batch_size=32, d_model=32, heads=2, encoder_blocks=1,
        decoder_blocks=1, latent=8, permutations=0))
    with pytest.raises(ZooError, match="only a sane-mode run"):
        embed(compression, zoos[1])


def test_halo_windows_cover_every_token_once_with_full_windows():
    for n, window, halo in [(9, 4, 1), (100, 16, 4), (17, 8, 0), (5, 8, 2), (64, 16, None)]:
        seen = []
        for lo, hi, keep in halo_windows(n, window, halo):
            assert hi - lo == min(window, n)
            seen += list(range(lo, hi))[keep]
        assert seen == list(range(n))


def test_windowed_sane_run_embeds_through_halo_windows(zoos, tmp_path):
    run = train(zoos[0], tmp_path / "w", TrainConfig(**dict(SMALL, window=4, windows_per_model=3,
                                                            halo=1, epochs=2)))
    result = embed(run, zoos[0], views=1)
    assert result["embedding"].shape == (20 * 2, 8) and np.isfinite(result["embedding"]).all()


def test_val_probes_never_read_the_test_split():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=60)
    y[40:] = np.nan  # test labels unreadable: any use would make the score NaN or raise
    x_test_poisoned = x.copy()
    x_test_poisoned[40:] = np.nan
    split = {"train": np.arange(30), "val": np.arange(30, 40), "test": np.arange(40, 60)}
    result = run_probes({"S(W)": x_test_poisoned, "embedding": x}, {"a": ("r2", y)}, split,
                        evaluate="val")
    assert result["a"]["S(W)"] > 0.9 and np.isfinite(result["a"]["kendall_tau"]["S(W)"])


def test_wide_logistic_probes_fit_in_the_span_of_the_training_rows():
    """Features outnumber training samples: the logistic probe fits in an orthonormal basis of
    the training rows' span, which keeps the L2 penalty and holds the full space's optimum: at a
    tight tolerance both reach the same weights and decisions."""
    from sklearn.linear_model import LogisticRegression

    from hyperrep.probes import training_row_space

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 300))
    y = (x[:, :3].sum(1) > 0).astype(int)
    train_x = x[:30]
    basis = training_row_space(train_x)
    assert basis.shape == (300, 30) and np.allclose(basis.T @ basis, np.eye(30))
    assert np.allclose(basis @ (basis.T @ train_x.T), train_x.T)  # the rows lie in the span
    fit = lambda features: LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(  # noqa
        features, y[:30])
    full, small = fit(train_x), fit(train_x @ basis)
    np.testing.assert_allclose(basis @ small.coef_[0], full.coef_[0], atol=1e-6)
    np.testing.assert_allclose(small.decision_function(x[30:] @ basis),
                               full.decision_function(x[30:]), atol=1e-5)
    assert training_row_space(x[:, :20]) is None  # as many samples as features: fitted as is


# -- sampling from sane-mode runs ------------------------------------------------------------------
def test_the_sane_sampler_takes_one_anchor_per_draw():
    """As SANE's code samples (one KDE per token position, one random state for all of them):
    every token of a draw comes from the same anchor."""
    from hyperrep.sample import draw_latents

    tokens, latent = 6, 4
    anchors = np.random.default_rng(0).normal(size=(5, tokens * latent)).astype(np.float32)
    draws = draw_latents("sane", anchors, anchors, 40, 0.01, True, seed=2, token_latent=latent)
    assert draws.shape == (40, tokens * latent)
    for draw in draws.reshape(40, tokens, latent):
        per_token = np.linalg.norm(draw[None] - anchors.reshape(5, tokens, latent), axis=2)
        assert len(set(per_token.argmin(0))) == 1 and per_token.min(0).max() < 0.1
    assert np.array_equal(draws, draw_latents("sane", anchors, anchors, 40, 0.01, True, seed=2,
                                              token_latent=latent))
    with pytest.raises(ZooError, match="sane-mode run"):
        draw_latents("sane", anchors, anchors, 2, 0.01, True, seed=0)


# halo decode(encode) of a windowed run: relative error of the training models' weights
# (normalised units) below this; measured 0.033 after 150 epochs (window 4 + halo 1 of 9 tokens)
HALO_RECONSTRUCTION_BOUND = 0.1


@pytest.fixture(scope="module")
def windowed_run(zoos, tmp_path_factory):
    cfg = dict(SMALL, window=4, windows_per_model=4, halo=1, epochs=150, gamma=0.0, noise=0.0,
               permutations=0, canonical=True, d_model=48, latent=16, lr=3e-3)
    return train(zoos[0], tmp_path_factory.mktemp("wrun") / "run", TrainConfig(**cfg))


def test_halo_decoding_of_a_windowed_run_reproduces_the_models(zoos, windowed_run):
    from hyperrep.sample import decode_latents, run_latents

    model, data, config = open_run_tokens(windowed_run, zoos[0])
    with data.zoo:
        rows = data.rows_of(np.asarray(config["splits"]["train"]))
        x = data.normalised(rows)
        latents = run_latents(model, x, data)  # the run's halo: 1
        assert latents.shape == (len(rows), 9 * 16)  # every token's latent, flattened
        decoded = data.normalise(torch.from_numpy(decode_latents(model, latents, data)))
    error = float((decoded - x).norm() / x.norm())
    print(f"halo decode(encode) relative error {error:.3f}")
    assert error < HALO_RECONSTRUCTION_BOUND


def test_sampling_a_windowed_run_writes_whole_models(zoos, windowed_run, tmp_path):
    from hyperrep.sample import SampleConfig, sample
    from modelzoo import open_zoo
    from modelzoo.archive import validate_archive

    out = tmp_path / "samples"
    report = sample(windowed_run, zoos[0], out,
                    SampleConfig.of(n=3, samplers=("sane", "kde-anchor"), finetune_epochs=1))
    assert validate_archive(out) == []
    with open_zoo(out) as samples:
        assert len(samples) == 6
        for m in samples.model_ids:
            net = samples.model(m, 0)  # strict loading into the architecture
            assert all(torch.isfinite(p).all() for p in net.parameters())
    assert set(report["nearest_train_distance"]) == {"sane", "kde-anchor", "B_F"}


def test_weights_that_do_not_fit_the_run_config_are_one_clear_error(zoos, run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = load_file(str(copy / "model.safetensors"))
    state["to_latent.weight"] = state["to_latent.weight"][:, :3].contiguous()
    del state["debed.1.bias"]
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(ZooError, match="missing 'debed.1.bias'; 1 missing, 0 unexpected, 1 of"):
        embed(copy, zoos[0])


def test_a_run_on_tetris_mlps_embeds_and_probes_a_cnn_zoo(zoos, tmp_path):
    """Another architecture altogether: trained on the Tetris MLPs with tokens long enough for
    CNN-s rows (201) and position tables for its 48 tokens in 5 layers, the run embeds a CNN-s
    digits zoo and a probe reads it."""
    cnn = generate(parse_spec({"name": "digits-cnn", "architecture": {"name": "cnn_s",
                                                                      "in_channels": 1},
                               "dataset": {"name": "digits"},
                               "training": {"epochs": 2, "batch_size": 32, "lr": 0.003},
                               "factors": {"seed": {"range": [1, 8]},
                                           "activation": ["tanh", "relu"]}}),
                   tmp_path / "cnn")
    run = train(zoos[0], tmp_path / "run", TrainConfig(**dict(SMALL, token_size=201, epochs=2,
                                                             max_positions=(64, 8, 32))))
    result = embed(run, cnn, views=1)
    assert result["embedding"].shape == (14 * 2, 8) and np.isfinite(result["embedding"]).all()
    table = probe_splits(run, cnn, ("val",), views=1)["val"]
    assert np.isfinite(table["epoch"]["embedding"])
    # the CNN zoo is probed on its own split (the one it was standardised with), not on the
    # Tetris run's split applied to model numbers that both zoos happen to have
    config = json.loads((run / "config.json").read_text())
    with open_zoo(cnn) as zoo, open_zoo(zoos[0]) as own:
        mine = {k: list(map(int, v))
                for k, v in zoo.split_models(config["train"]["split_seed"]).items()}
        assert probe_split_models(zoo, config) == mine != config["splits"]
        assert probe_split_models(own, config) == config["splits"]
