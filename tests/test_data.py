"""Every reader on small files written in the publisher's real format (torchgeo-style fixtures)."""

import bz2
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from modelzoo.data import create_dataset
from modelzoo.data.readers import EUROSAT_CLASSES
from modelzoo.errors import ZooError

RNG = np.random.default_rng(0)


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def mnist_folder(root, folder="MNIST", n_train=40, n_test=10, gz=True):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    ext = ".gz" if gz else ""
    images = RNG.integers(0, 256, (n_train, 28, 28))
    write_idx(raw / f"train-images-idx3-ubyte{ext}", images)
    write_idx(raw / f"train-labels-idx1-ubyte{ext}", np.arange(n_train) % 10)
    write_idx(raw / f"t10k-images-idx3-ubyte{ext}", RNG.integers(0, 256, (n_test, 28, 28)))
    write_idx(raw / f"t10k-labels-idx1-ubyte{ext}", np.arange(n_test) % 10)
    return images


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", True),
                                            ("fashion_mnist", "FashionMNIST", False)])
def test_mnist_like_idx(tmp_path, name, folder, gz):
    images = mnist_folder(tmp_path, folder, gz=gz)
    data = create_dataset(name, root=tmp_path, val_size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (32, 8, 10)
    assert data.input_shape == (1, 28, 28)
    # the split keeps order: un-normalising the first train image gives back its pixels
    first = data.train.x[0]
    std, mean = first.std(), first.mean()
    raw = torch.tensor(images[data.train.y[0].item() == np.arange(40) % 10][0] / 255.0).float()
    assert torch.allclose((first - mean) / std, (raw - raw.mean()) / raw.std(), atol=1e-4)


def test_idx_truncated(tmp_path):
    mnist_folder(tmp_path, gz=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ZooError, match="truncated"):
        create_dataset("mnist", root=tmp_path, val_size=8)


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    for name, n in (("train_32x32.mat", 30), ("test_32x32.mat", 10)):
        savemat(tmp_path / name, {"X": RNG.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                                  "y": (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)})
    data = create_dataset("svhn", root=tmp_path, val_size=5)
    assert data.input_shape == (1, 28, 28)  # published preprocessing: grayscale, centre crop 28
    assert set(data.test.y.tolist()) == set(range(10))  # label 10 -> digit 0


def test_usps_bz2(tmp_path):
    for name, n in (("usps.bz2", 30), ("usps.t.bz2", 10)):
        lines = [f"{i % 10 + 1} " + " ".join(f"{j + 1}:{v:.4f}" for j, v in
                                             enumerate(RNG.uniform(-1, 1, 256)))
                 for i in range(n)]
        with bz2.open(tmp_path / name, "wt") as f:
            f.write("\n".join(lines) + "\n")
    data = create_dataset("usps", root=tmp_path, val_size=5)
    assert data.input_shape == (1, 28, 28) and len(data.test) == 10
    assert data.test.y.tolist() == [i % 10 for i in range(10)]


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    for split, n in (("train", 12), ("test", 4)):
        RNG.integers(0, 256, n * 3 * 96 * 96).astype(np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    data = create_dataset("stl10", root=tmp_path, val_size=2)
    assert data.input_shape == (3, 28, 28) and data.test.y.tolist() == [0, 1, 2, 3]


def test_cifar_binaries(tmp_path):
    c10 = tmp_path / "cifar-10-batches-bin"
    c10.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([np.arange(4).reshape(-1, 1) % 10,
                                  RNG.integers(0, 256, (4, 3072))], axis=1).astype(np.uint8)
        records.tofile(c10 / name)
    data = create_dataset("cifar10", root=tmp_path, val_size=4)
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 4)
    assert data.input_shape == (3, 32, 32)

    c100 = tmp_path / "cifar-100-binary"
    c100.mkdir()
    for name, n in (("train.bin", 10), ("test.bin", 5)):
        records = np.concatenate([np.zeros((n, 1)), np.arange(n).reshape(-1, 1) * 7,
                                  RNG.integers(0, 256, (n, 3072))], axis=1).astype(np.uint8)
        records.tofile(c100 / name)
    data = create_dataset("cifar100", root=tmp_path, val_size=2)
    assert data.test.y.tolist() == [0, 7, 14, 21, 28] and data.num_classes == 100


def test_cifar_wrong_size(tmp_path):
    c10 = tmp_path / "cifar-10-batches-bin"
    c10.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (c10 / name).write_bytes(b"\x00" * 100)
    with pytest.raises(ZooError, match="not a CIFAR binary file"):
        create_dataset("cifar10", root=tmp_path)


def test_tiny_imagenet_folders(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    annotations = []
    for i, wnid in enumerate(wnids):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for j in range(3):
            Image.fromarray(RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(
                images / f"{wnid}_{j}.JPEG", format="JPEG")
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(
            base / "val" / "images" / f"val_{i}.JPEG", format="JPEG")
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    data = create_dataset("tiny_imagenet", root=tmp_path, val_size=2)
    assert data.input_shape == (3, 64, 64) and data.test.y.tolist() == [0, 1]


def test_eurosat_rgb_and_ms(tmp_path):
    import tifffile

    for cls in EUROSAT_CLASSES:
        rgb = tmp_path / "2750" / cls
        ms = tmp_path / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif" / cls
        rgb.mkdir(parents=True)
        ms.mkdir(parents=True)
        for n in range(1, 4):
            Image.fromarray(RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(
                rgb / f"{cls}_{n}.jpg")
            tifffile.imwrite(ms / f"{cls}_{n}.tif",
                             RNG.integers(0, 4000, (64, 64, 13)).astype(np.uint16))
    rgb = create_dataset("eurosat", root=tmp_path)
    assert rgb.input_shape == (3, 64, 64) and rgb.num_classes == 10
    assert len(rgb.train) + len(rgb.val) + len(rgb.test) == 30
    ms = create_dataset("eurosat_ms", root=tmp_path)
    assert ms.input_shape == (13, 64, 64)


def test_missing_folder_says_what_and_where(tmp_path):
    with pytest.raises(ZooError, match=r"MNIST/raw/train-images-idx3-ubyte.*yann.lecun.com"):
        create_dataset("mnist", root=tmp_path)
    with pytest.raises(ZooError, match="does not exist"):
        create_dataset("cifar10", root=tmp_path / "nope")
    with pytest.raises(ZooError, match="needs a data folder"):
        create_dataset("svhn")


def test_offline_sets_split_70_15_15():
    for name, total in (("digits", 1797), ("tetris", 3000)):
        data = create_dataset(name)
        sizes = np.array([len(data.train), len(data.val), len(data.test)]) / total
        assert np.allclose(sizes, [0.7, 0.15, 0.15], atol=0.01)
    assert create_dataset("digits").input_shape == (1, 28, 28)
