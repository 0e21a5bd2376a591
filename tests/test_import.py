"""``zoo import``: small folders written in the published layouts become valid archives whose models
compute what the original checkpoints compute."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cli.zoo
from modelzoo import open_zoo
from modelzoo.archive import validate_archive
from modelzoo.archive.layout import Layout
from modelzoo.models import create_model
from tests.conftest import invoke_cli, run_cli


class PublishedCNN(nn.Module):
    """CNN-s as the Model Zoos code names its modules (a ModuleList), to load checkpoints the
    original way."""

    def __init__(self):
        super().__init__()
        self.module_list = nn.ModuleList([nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(),
                                          nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
                                          nn.Conv2d(6, 4, 2), nn.Tanh(), nn.Flatten(),
                                          nn.Linear(36, 20), nn.Tanh(), nn.Linear(20, 10)])

    def forward(self, x):
        for module in self.module_list:
            x = module(x)
        return F.log_softmax(x, dim=-1)


@pytest.fixture
def modelzoos_folder(tmp_path):
    """Three CNN-s models x checkpoints 0..2 in the Ray Tune layout."""
    root = tmp_path / "mnist_seed"
    for seed in (1, 2, 3):
        folder = root / f"NN_tune_trainable_{seed:05d}_seed={seed}_2021-01-01"
        torch.manual_seed(seed)
        net = PublishedCNN()
        params = {"model::type": "CNN", "model::nlin": "tanh", "model::init_type": "uniform",
                  "model::dropout": 0.0, "optim::optimizer": "adam", "optim::lr": 3e-4,
                  "optim::wd": 0.0, "seed": seed, "training::batchsize": 10,
                  "training::epochs_train": 2, "dataset::dump": "/data/MNIST/dataset.pt"}
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(params))
        lines = []
        for epoch in range(3):
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            (folder / f"checkpoint_{epoch:06d}").mkdir()
            torch.save(net.state_dict(), folder / f"checkpoint_{epoch:06d}" / "checkpoints")
            train = -999 if epoch == 0 else 0.5 + 0.1 * epoch
            lines.append(json.dumps({"train_loss": train, "train_acc": train,
                                     "test_loss": 1.0 - 0.1 * epoch, "test_acc": 0.4 + 0.1 * epoch,
                                     "training_iteration": epoch + 1}))
        (folder / "result.json").write_text("\n".join(lines) + "\n")
    return root


def test_modelzoos_import_keeps_every_checkpoints_function(modelzoos_folder, tmp_path):
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "import", str(modelzoos_folder), "--format", "modelzoos",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "imported 3 models x 3 states (cnn_s" in result.stdout
    assert validate_archive(out) == []
    x = torch.randn(4, 1, 28, 28)
    with open_zoo(out) as zoo:
        assert zoo.spec.dataset.name == "mnist" and zoo.epochs == [0, 1, 2]
        assert zoo.factor_names == ["seed"]
        assert zoo.config(1).seed == 2 and zoo.config(1).lr == 3e-4
        table = zoo.metadata.set_index(["model", "epoch"])
        assert np.isnan(table.loc[(0, 0), "train_acc"]) and table.loc[(0, 2), "test_acc"] == \
            pytest.approx(0.6)
        folders = sorted(modelzoos_folder.iterdir())
        for m, folder in enumerate(folders):
            for epoch in range(3):
                original = PublishedCNN().eval()
                original.load_state_dict(torch.load(folder / f"checkpoint_{epoch:06d}" /
                                                    "checkpoints", weights_only=True))
                assert torch.allclose(zoo.model(m, epoch)(x), original(x), atol=1e-6)
    again = invoke_cli(cli.zoo.app, "import", str(modelzoos_folder), "--format", "modelzoos",
                       "--out", str(out))  # in this process: one error line (invoke_cli checks)
    assert again.exit_code == 2 and "exists and is not empty" in again.stderr


@pytest.mark.parametrize("offset", [0, 1])
def test_modelzoos_metrics_pair_by_training_iteration(modelzoos_folder, tmp_path, offset):
    """A result.json that lost its epoch-1 line: pairing by position would give epoch 1 the
    metrics of epoch 2; pairing by training_iteration (offset detected) leaves it unrecorded."""
    for folder in modelzoos_folder.iterdir():
        lines = [json.dumps({"train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0 - 0.1 * e,
                             "test_acc": 0.4 + 0.1 * e, "training_iteration": e + offset})
                 for e in (0, 2)]
        (folder / "result.json").write_text("\n".join(lines) + "\n")
    out = tmp_path / "zoo"
    result = invoke_cli(cli.zoo.app, "import", str(modelzoos_folder), "--format", "modelzoos",
                        "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"training_iteration = epoch + {offset}" in result.stdout
    assert validate_archive(out) == []
    with open_zoo(out) as zoo:
        assert zoo.manifest.source["metrics_offset"] == offset
        table = zoo.metadata.set_index(["model", "epoch"])
        for m in range(3):
            assert table.loc[(m, 0), "test_acc"] == pytest.approx(0.4)
            assert np.isnan(table.loc[(m, 1), "test_acc"])
            assert table.loc[(m, 2), "test_acc"] == pytest.approx(0.6)


class NotAWeight:
    pass


def test_a_checkpoint_that_needs_unpickling_is_refused(modelzoos_folder, tmp_path):
    bad = next(modelzoos_folder.iterdir()) / "checkpoint_000001" / "checkpoints"
    torch.save({"weight": torch.zeros(2), "extra": NotAWeight()}, bad)
    out = tmp_path / "zoo"
    result = invoke_cli(cli.zoo.app, "import", str(modelzoos_folder), "--format", "modelzoos",
                        "--out", str(out))  # one error line, no traceback: invoke_cli checks
    assert result.exit_code == 2 and "refused" in result.stderr
    assert not out.exists() and not any(p.name.startswith(".zoo") for p in tmp_path.iterdir())


def tf_conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray,
                 padding: str = "same") -> np.ndarray:
    """Reference NHWC convolution, HWIO kernel, stride 2, TensorFlow 'same' or 'valid' padding,
    then ReLU."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    if padding == "same":
        oh, ow = -(-h // 2), -(-w // 2)
        ph, pw = max((oh - 1) * 2 + k - h, 0), max((ow - 1) * 2 + k - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - k) // 2 + 1, (w - k) // 2 + 1
    out = np.zeros((n, oh, ow, kernel.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, 2 * i:2 * i + k, 2 * j:2 * j + k, :]
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, kernel)
    return np.maximum(out + bias, 0)


SMALL_CNN_ZOO_STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)
KERAS_VARIABLES = [("sequential/conv2d", (3, 3, 1, 16)), ("sequential/conv2d_1", (3, 3, 16, 16)),
                   ("sequential/conv2d_2", (3, 3, 16, 16)), ("sequential/dense", (16, 10))]


def keras_forward(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """The published network rebuilt from its description (google-research dnn_predict_accuracy,
    ``build_cnn``): 3 x Conv2D(16, 3, strides 2, Keras' default 'valid' padding, ReLU) on NHWC
    inputs, global average pooling, Dense(10) -> logits [N, 10]."""
    h = x
    for layer, _ in KERAS_VARIABLES[:3]:
        h = tf_conv_relu(h, params[f"{layer}/kernel:0"], params[f"{layer}/bias:0"], "valid")
    dense = KERAS_VARIABLES[3][0]
    return h.mean((1, 2)) @ params[f"{dense}/kernel:0"] + params[f"{dense}/bias:0"]


@pytest.fixture
def unterthiner_folder(tmp_path):
    """A Small CNN Zoo folder written as google-research publishes it: 3 models (modeldirs) x the
    published checkpoint epochs; metrics.csv.gz indexed and sorted by checkpoint path (so each
    model's steps come 0, 1, 2, 20, 3, 40, ...), layout.csv with Keras variable names, bias before
    kernel, and shapes. Model 2 never reached step 60 (a crashed run); model 1's step-86 row is
    NaN (a diverged run). Returns (folder, {(model, step): Keras variables}, images [N, 28, 28])."""
    root = tmp_path / "small_cnn_zoo_mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    variables, offset = [], 0
    for layer, shape in KERAS_VARIABLES:
        for kind, var_shape in (("bias", shape[-1:]), ("kernel", shape)):
            size = int(np.prod(var_shape))
            variables.append((f"{layer}/{kind}:0", offset, offset + size, var_shape))
            offset += size
    pd.DataFrame({"varname": [v[0] for v in variables], "start_idx": [v[1] for v in variables],
                  "end_idx": [v[2] for v in variables],
                  "shape": [str(v[3]) for v in variables]}).to_csv(root / "layout.csv", index=False)
    images = rng.integers(0, 256, (16, 28, 28))
    x = (images[..., None] / 255.0) * 2 - 1  # the published preprocessing: [0, 255] -> [-1, 1]
    labels = np.arange(16) % 10
    rows, params = [], {}
    for m, (w_init, lr) in enumerate([("glorot_normal", 0.01), ("he_normal", 0.001),
                                      ("glorot_uniform", 0.003)]):
        modeldir = f"/placer/prod/home/smallcnnzoo/mnist/run_{17 + m:05d}"
        for step in SMALL_CNN_ZOO_STEPS:
            if (m, step) == (2, 60):
                continue
            state = {v[0]: rng.normal(0, 0.3, v[3]).astype(np.float32) for v in variables}
            flat = np.zeros(offset, np.float32)
            for name, start, end, _ in variables:
                flat[start:end] = state[name].reshape(-1)
            if (m, step) == (1, 86):
                flat[:] = np.nan
            else:
                params[(m, step)] = state
            predicted = keras_forward(x, state).argmax(1) if (m, step) != (1, 86) else labels + 1
            rows.append((f"{modeldir}/permanent_ckpt-{step}", flat, {
                "config.activation": "relu", "config.b_init": "zeros", "config.dataset": "mnist",
                "config.dnn_architecture": "cnn", "config.dropout": 0.0, "config.epochs": 86,
                "config.epochs_between_checkpoints": 20, "config.init_std": 0.05,
                "config.l2reg": 1e-4, "config.learning_rate": lr, "config.num_layers": 3,
                "config.num_units": 16, "config.optimizer": "adam", "config.random_seed": 42,
                "config.train_fraction": 0.5, "config.w_init": w_init, "modeldir": modeldir,
                "step": step, "test_accuracy": float((predicted == labels).mean()),
                "test_loss": 2.0 - step / 100, "train_accuracy": 0.1 + step / 100,
                "train_loss": 2.1 - step / 100}))
    rows.sort(key=lambda r: r[0])  # the published row order: by checkpoint path
    np.save(root / "weights.npy", np.stack([r[1] for r in rows]))
    table = pd.DataFrame([r[2] for r in rows], index=[r[0] for r in rows])
    with gzip.open(root / "metrics.csv.gz", "wt") as f:
        table.to_csv(f)
    return root, params, images


def test_unterthiner_import_computes_the_published_function(unterthiner_folder, tmp_path):
    folder, params, images = unterthiner_folder
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "import", str(folder), "--format", "unterthiner", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "init" in result.stdout  # Keras initialiser names are kept as factors only
    assert "1 states the source lacks" in result.stdout and "1 states with non-finite" in result.stdout
    assert validate_archive(out) == []
    assert run_cli("cli.zoo", "validate", str(out)).returncode == 0
    info = run_cli("cli.zoo", "info", str(out), "--json")
    per_epoch = {row["epoch"]: row for row in json.loads(info.stdout)["test_acc_per_epoch"]}
    assert per_epoch[60]["models"] == 2 and per_epoch[86]["models"] == 3  # a missing state: left out
    assert all(np.isfinite(row["mean"]) for row in per_epoch.values())
    table = pd.read_csv(folder / "metrics.csv.gz", index_col=0)
    x = (images[..., None] / 255.0) * 2 - 1
    with open_zoo(out) as zoo:
        assert len(zoo) == 3 and zoo.epochs == list(SMALL_CNN_ZOO_STEPS)
        assert zoo.manifest.architecture_kwargs["padding"] == "valid"
        assert zoo.spec.dataset.name == "mnist" and zoo.spec.dataset.scale == "symmetric"
        assert zoo.manifest.missing_states == {(2, 60)}
        assert zoo.manifest.nonfinite_states == {(1, 86)}
        meta = zoo.metadata.set_index(["model", "epoch"])
        assert meta.loc[(1, 20), "init"] == "he_normal" and zoo.config(1).lr == 0.001
        assert zoo.config(0).train_fraction == 0.5
        for (m, step), state in params.items():
            ours = zoo.model(m, step)(torch.from_numpy(x.transpose(0, 3, 1, 2)).float())
            expected = torch.log_softmax(torch.from_numpy(keras_forward(x, state)), -1).float()
            assert torch.allclose(ours, expected, atol=1e-5), (m, step)
            published = table[(table.modeldir == table.modeldir.unique()[m]) & (table.step == step)]
            for column, metric in (("test_accuracy", "test_acc"), ("train_loss", "train_loss")):
                assert meta.loc[(m, step), metric] == np.float32(published[column].iloc[0])
        assert np.isnan(zoo.flat(2, 60)).all() and np.isnan(meta.loc[(2, 60), "test_acc"])
        assert np.isnan(zoo.flat(1, 86)).all() and np.isfinite(zoo.flat(1, 80)).all()
        assert np.isfinite(zoo.flat(2, 80)).all()


def test_unterthiner_inputs_reproduce_the_published_accuracies(unterthiner_folder, tmp_path):
    """The data spec the import records (pixels in [-1, 1]) feeds each model the inputs it was
    trained on: its accuracy through our data pipeline is the published one."""
    from modelzoo.data import create_dataset
    from tests.test_data import write_idx

    folder, params, images = unterthiner_folder
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 16)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images if prefix == "t10k" else
                  np.zeros((n, 28, 28), np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    out = tmp_path / "zoo"
    assert invoke_cli(cli.zoo.app, "import", str(folder), "--format", "unterthiner", "--out",
                      str(out)).exit_code == 0
    with open_zoo(out) as zoo:
        options = zoo.spec.dataset.model_dump(exclude={"name", "root", "val_size"})
        test = create_dataset("mnist", root=tmp_path / "data", val_size=8, **options).test
        meta = zoo.metadata.set_index(["model", "epoch"])
        for m, step in params:
            with torch.no_grad():
                accuracy = (zoo.model(m, step)(test.x).argmax(1) == test.y).float().mean()
            assert accuracy.item() == pytest.approx(meta.loc[(m, step), "test_acc"])


def test_a_layout_that_does_not_fit_the_architecture_is_one_error(unterthiner_folder, tmp_path):
    folder = unterthiner_folder[0]
    layout = pd.read_csv(folder / "layout.csv")
    layout.loc[1, "shape"] = "(3, 3, 3, 16)"
    layout.to_csv(folder / "layout.csv", index=False)
    result = invoke_cli(cli.zoo.app, "import", str(folder), "--format", "unterthiner", "--out",
                        str(tmp_path / "zoo"))  # one error line: invoke_cli checks
    assert result.exit_code == 2 and "conv1.weight needs (3, 3, 1, 16)" in result.stderr
    assert not (tmp_path / "zoo").exists()


def test_broken_or_missing_published_files_are_one_error_line(unterthiner_folder, tmp_path):
    unterthiner_folder = unterthiner_folder[0]
    (unterthiner_folder / "layout.csv").unlink()
    result = run_cli("cli.zoo", "import", str(unterthiner_folder), "--format", "unterthiner",
                     "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "layout.csv is missing" in result.stderr
    for args in (["--format", "keras"], ["--format", "modelzoos"]):  # in this process
        result = invoke_cli(cli.zoo.app, "import", str(unterthiner_folder), *args, "--out",
                            str(tmp_path / "b"))
        assert result.exit_code == 2, result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tf_same_padding_layer_matches_the_reference():
    net = create_model("unterthiner_cnn", padding="same").eval()
    assert Layout.of(net).size == 4970
    x = torch.randn(1, 1, 28, 28)
    kernel = net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    ours = F.relu(net.conv1(F.pad(x, (0, 1, 0, 1)))).detach().numpy().transpose(0, 2, 3, 1)
    reference = tf_conv_relu(x.numpy().transpose(0, 2, 3, 1), kernel,
                                  net.conv1.bias.detach().numpy())
    assert np.allclose(ours, reference, atol=1e-5)


def test_hyperrep_runs_on_imported_zoos(modelzoos_folder, unterthiner_folder, tmp_path):
    """hyperrep trains and embeds on an imported zoo; models with NaN states (a missing step, a
    diverged run) are left out of its samples whole."""
    from hyperrep.data import ZooTokens

    ut = tmp_path / "ut"
    assert invoke_cli(cli.zoo.app, "import", str(unterthiner_folder[0]), "--format",
                      "unterthiner", "--out", str(ut)).exit_code == 0
    with open_zoo(ut) as zoo:
        data = ZooTokens(zoo, 64, None)
        assert data.left_out == [1, 2] and set(data.models) == {0}
        assert torch.isfinite(data.flat).all() and len(data.flat) == len(zoo.epochs) - 1
    zoo = tmp_path / "mz"
    assert invoke_cli(cli.zoo.app, "import", str(modelzoos_folder), "--format", "modelzoos",
                      "--out", str(zoo)).exit_code == 0
    run = tmp_path / "run"
    steps = [("cli.hyperrep", "train", str(zoo), "--out", str(run), "--epochs", "1"),
             ("cli.hyperrep", "embed", str(run), str(zoo), "--out", str(tmp_path / "e.npz"),
              "--device", "auto")]
    for step in steps:
        result = run_cli(*step)
        assert result.returncode == 0, (step[:2], result.stderr[-2000:])
    assert np.load(tmp_path / "e.npz")["embedding"].shape[0] == 3 * 2
