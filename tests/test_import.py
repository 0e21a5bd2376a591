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

from modelzoo import open_zoo
from modelzoo.archive import validate_archive
from modelzoo.archive.layout import Layout
from modelzoo.models import create_model
from tests.conftest import run_cli


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
    again = run_cli("cli.zoo", "import", str(modelzoos_folder), "--format", "modelzoos",
                    "--out", str(out))
    assert again.returncode == 2 and again.stderr.startswith("error:")


class NotAWeight:
    pass


def test_a_checkpoint_that_needs_unpickling_is_refused(modelzoos_folder, tmp_path):
    bad = next(modelzoos_folder.iterdir()) / "checkpoint_000001" / "checkpoints"
    torch.save({"weight": torch.zeros(2), "extra": NotAWeight()}, bad)
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "import", str(modelzoos_folder), "--format", "modelzoos",
                     "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not any(p.name.startswith(".zoo") for p in tmp_path.iterdir())


def tf_same_conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Reference NHWC convolution, HWIO kernel, stride 2, TensorFlow 'same' padding, then ReLU."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    oh, ow = -(-h // 2), -(-w // 2)
    ph, pw = max((oh - 1) * 2 + k - h, 0), max((ow - 1) * 2 + k - w, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, kernel.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, 2 * i:2 * i + k, 2 * j:2 * j + k, :]
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, kernel)
    return np.maximum(out + bias, 0)


@pytest.fixture
def unterthiner_folder(tmp_path):
    """Two models x steps 0, 10, 20 as TensorFlow-ordered rows + metrics + layout."""
    root = tmp_path / "small_cnn_zoo_mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    sizes = [("conv1/kernel", 144), ("conv1/bias", 16), ("conv2/kernel", 2304),
             ("conv2/bias", 16), ("conv3/kernel", 2304), ("conv3/bias", 16),
             ("dense/kernel", 160), ("dense/bias", 10)]
    starts = np.cumsum([0] + [s for _, s in sizes])
    pd.DataFrame({"varname": [n for n, _ in sizes], "start_idx": starts[:-1],
                  "end_idx": starts[1:]}).to_csv(root / "layout.csv", index=False)
    rows, table = [], []
    for model, (w_init, lr) in enumerate([("glorot_normal", 0.01), ("he_normal", 0.001)]):
        for step in (0, 10, 20):
            rows.append(rng.normal(0, 0.3, starts[-1]).astype(np.float32))
            table.append({"config.activation": "relu", "config.w_init": w_init,
                          "config.learning_rate": lr, "config.l2reg": 1e-4,
                          "config.train_fraction": 0.5, "config.dropout": 0.0, "step": step,
                          "train_accuracy": 0.1 + step / 100, "test_accuracy": 0.1 + step / 120,
                          "train_loss": 2.0, "test_loss": 2.1})
    np.save(root / "weights.npy", np.stack(rows))
    with gzip.open(root / "metrics.csv.gz", "wt") as f:
        pd.DataFrame(table).to_csv(f, index=False)
    return root


def test_unterthiner_import_computes_the_tensorflow_function(unterthiner_folder, tmp_path):
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "import", str(unterthiner_folder), "--format", "unterthiner",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "init" in result.stdout  # Keras initialiser names are kept as factors only
    assert validate_archive(out) == []
    weights = np.load(unterthiner_folder / "weights.npy")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 28, 28, 1))
    with open_zoo(out) as zoo:
        assert len(zoo) == 2 and zoo.epochs == [0, 10, 20] and zoo.spec.dataset.name == "mnist"
        assert zoo.metadata.set_index(["model", "epoch"]).loc[(1, 20), "init"] == "he_normal"
        assert zoo.config(1).lr == 0.001 and zoo.config(0).train_fraction == 0.5
        for m in range(2):
            row = weights[3 * m + 2]
            h = x
            for start in (0, 160, 2480):
                size = 144 if start == 0 else 2304
                kernel = row[start:start + size].reshape(3, 3, -1, 16)
                h = tf_same_conv_relu(h, kernel, row[start + size:start + size + 16])
            logits = h.mean((1, 2)) @ row[4800:4960].reshape(16, 10) + row[4960:]
            ours = zoo.model(m, 20)(torch.from_numpy(x.transpose(0, 3, 1, 2)).float())
            expected = torch.log_softmax(torch.from_numpy(logits), -1).float()
            assert torch.allclose(ours, expected, atol=1e-4)


def test_broken_or_missing_published_files_are_one_error_line(unterthiner_folder, tmp_path):
    (unterthiner_folder / "layout.csv").unlink()
    result = run_cli("cli.zoo", "import", str(unterthiner_folder), "--format", "unterthiner",
                     "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "layout.csv is missing" in result.stderr
    for args in (["--format", "keras"], ["--format", "modelzoos"]):
        result = run_cli("cli.zoo", "import", str(unterthiner_folder), *args, "--out",
                         str(tmp_path / "b"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tf_same_padding_layer_matches_the_reference():
    net = create_model("unterthiner_cnn", tf_padding=True).eval()
    assert Layout.of(net).size == 4970
    x = torch.randn(1, 1, 28, 28)
    kernel = net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    ours = F.relu(net.conv1(F.pad(x, (0, 1, 0, 1)))).detach().numpy().transpose(0, 2, 3, 1)
    reference = tf_same_conv_relu(x.numpy().transpose(0, 2, 3, 1), kernel,
                                  net.conv1.bias.detach().numpy())
    assert np.allclose(ours, reference, atol=1e-5)
