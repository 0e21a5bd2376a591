"""Readers for image data sets a user already has, in torchvision's / torchgeo's folder layouts.

No reader unpickles anything: IDX, .mat (MATLAB v5 through scipy), bz2 libsvm text, raw binaries,
JPEG/PNG through PIL and GeoTIFF through tifffile. Images come back scaled to [0, 1].
"""

import bz2
import gzip
from pathlib import Path

import numpy as np
import torch

from modelzoo.data.registry import RawData, Split, register_dataset, require_file, split_off
from modelzoo.errors import ZooError

MNIST_SOURCE = "http://yann.lecun.com/exdb/mnist/"
FMNIST_SOURCE = "https://github.com/zalandoresearch/fashion-mnist"
SVHN_SOURCE = "http://ufldl.stanford.edu/housenumbers/"
USPS_SOURCE = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps"
STL10_SOURCE = "https://cs.stanford.edu/~acoates/stl10/"
CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (binary version)"
TINY_SOURCE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
EUROSAT_SOURCE = "https://github.com/phelber/EuroSAT"

EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                   "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]


def _images(array: np.ndarray, scale: float) -> torch.Tensor:
    """uint8/uint16 array [N, C, H, W] -> float32 tensor scaled by 1/scale."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / scale)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its stored dtype and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ZooError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ZooError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ZooError(f"{path}: IDX file is truncated ({array.size} values for shape {shape})")
    return array.reshape(shape)


def _mnist_like(root: Path, dataset: str, folder: str, source: str, classes: list[str]) -> RawData:
    def load(stem: str) -> np.ndarray:
        return read_idx(require_file(root, dataset, [f"{folder}/raw/{stem}", f"{folder}/raw/{stem}.gz",
                                                      stem, f"{stem}.gz"], source))

    train = Split(_images(load("train-images-idx3-ubyte")[:, None], 255.0),
                  torch.from_numpy(load("train-labels-idx1-ubyte").astype(np.int64)))
    test = Split(_images(load("t10k-images-idx3-ubyte")[:, None], 255.0),
                 torch.from_numpy(load("t10k-labels-idx1-ubyte").astype(np.int64)))
    return RawData(train=train, test=test, classes=classes)


@register_dataset("mnist", val_size=10_000, source=MNIST_SOURCE)
def read_mnist(root: Path) -> RawData:
    """MNIST IDX files in ``root/MNIST/raw/`` (or ``root/``): 60k train (50k/10k), 10k test."""
    return _mnist_like(root, "mnist", "MNIST", MNIST_SOURCE, [str(d) for d in range(10)])


@register_dataset("fashion_mnist", val_size=10_000, source=FMNIST_SOURCE)
def read_fashion_mnist(root: Path) -> RawData:
    """Fashion-MNIST IDX files in ``root/FashionMNIST/raw/`` (or ``root/``)."""
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]
    return _mnist_like(root, "fashion_mnist", "FashionMNIST", FMNIST_SOURCE, classes)


@register_dataset("svhn", val_size=13_257, source=SVHN_SOURCE, grayscale=True, center_crop=28)
def read_svhn(root: Path) -> RawData:
    """SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` (label 10 means digit 0)."""
    from scipy.io import loadmat

    def load(name: str) -> Split:
        path = require_file(root, "svhn", [name, f"svhn/{name}"], SVHN_SOURCE)
        try:
            mat = loadmat(path)
        except (ValueError, OSError) as exc:
            raise ZooError(f"{path}: not a readable .mat file ({exc})") from None
        x = np.transpose(mat["X"], (3, 2, 0, 1))
        y = mat["y"].reshape(-1).astype(np.int64) % 10
        return Split(_images(x, 255.0), torch.from_numpy(y))

    return RawData(train=load("train_32x32.mat"), test=load("test_32x32.mat"),
                   classes=[str(d) for d in range(10)])


def _read_libsvm_bz2(path: Path, features: int) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    with bz2.open(path, "rt") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                values = np.zeros(features, dtype=np.float32)
                for item in parts[1:]:
                    index, value = item.split(":")
                    values[int(index) - 1] = float(value)
                labels.append(int(float(parts[0])) - 1)
            except (ValueError, IndexError):
                raise ZooError(f"{path}:{line_no}: not a libsvm line") from None
            rows.append(values)
    return np.stack(rows), np.array(labels, dtype=np.int64)


@register_dataset("usps", val_size=1291, source=USPS_SOURCE, resize=28)
def read_usps(root: Path) -> RawData:
    """USPS as libsvm bz2 files ``usps.bz2`` / ``usps.t.bz2``: 16x16 values in [-1, 1], labels 1-10."""

    def load(name: str) -> Split:
        x, y = _read_libsvm_bz2(require_file(root, "usps", [name, f"usps/{name}"], USPS_SOURCE), 256)
        x = (x.reshape(-1, 1, 16, 16) + 1.0) / 2.0
        return Split(torch.from_numpy(x), torch.from_numpy(y))

    return RawData(train=load("usps.bz2"), test=load("usps.t.bz2"),
                   classes=[str(d) for d in range(10)])


@register_dataset("stl10", val_size=800, source=STL10_SOURCE, resize=28)
def read_stl10(root: Path) -> RawData:
    """STL-10 binaries in ``root/stl10_binary/``: uint8 3x96x96 column-major images, labels 1-10."""
    folder = "stl10_binary"

    def load(split: str) -> Split:
        xp = require_file(root, "stl10", [f"{folder}/{split}_X.bin"], STL10_SOURCE)
        yp = require_file(root, "stl10", [f"{folder}/{split}_y.bin"], STL10_SOURCE)
        raw = np.fromfile(xp, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise ZooError(f"{xp}: size is not a multiple of one 3x96x96 image")
        x = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
        y = np.fromfile(yp, dtype=np.uint8).astype(np.int64) - 1
        if len(y) != len(x):
            raise ZooError(f"{yp}: {len(y)} labels for {len(x)} images")
        return Split(_images(x, 255.0), torch.from_numpy(y))

    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    return RawData(train=load("train"), test=load("test"), classes=classes)


def _read_cifar_binary(path: Path, label_bytes: int, label_index: int) -> Split:
    record = label_bytes + 3072
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise ZooError(f"{path}: not a CIFAR binary file (size {raw.size} is not a multiple of "
                       f"{record})")
    raw = raw.reshape(-1, record)
    x = raw[:, label_bytes:].reshape(-1, 3, 32, 32)
    y = raw[:, label_index].astype(np.int64)
    return Split(_images(x, 255.0), torch.from_numpy(y))


def _concat(splits: list[Split]) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


@register_dataset("cifar10", val_size=8_000, source=CIFAR_SOURCE)
def read_cifar10(root: Path) -> RawData:
    """CIFAR-10 binary version in ``root/cifar-10-batches-bin/`` (never the pickled python version)."""
    folder = "cifar-10-batches-bin"
    files = [require_file(root, "cifar10", [f"{folder}/data_batch_{i}.bin"], CIFAR_SOURCE)
             for i in range(1, 6)]
    train = _concat([_read_cifar_binary(f, 1, 0) for f in files])
    test = _read_cifar_binary(require_file(root, "cifar10", [f"{folder}/test_batch.bin"],
                                           CIFAR_SOURCE), 1, 0)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    return RawData(train=train, test=test, classes=classes)


@register_dataset("cifar100", val_size=10_000, source=CIFAR_SOURCE)
def read_cifar100(root: Path) -> RawData:
    """CIFAR-100 binary version in ``root/cifar-100-binary/`` with the 100 fine labels."""
    folder = "cifar-100-binary"
    train = _read_cifar_binary(require_file(root, "cifar100", [f"{folder}/train.bin"],
                                            CIFAR_SOURCE), 2, 1)
    test = _read_cifar_binary(require_file(root, "cifar100", [f"{folder}/test.bin"], CIFAR_SOURCE),
                              2, 1)
    return RawData(train=train, test=test, classes=[str(i) for i in range(100)])


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise ZooError(f"{path}: not a readable image ({exc})") from None


@register_dataset("tiny_imagenet", val_size=10_000, source=TINY_SOURCE)
def read_tiny_imagenet(root: Path) -> RawData:
    """Tiny-ImageNet in ``root/tiny-imagenet-200/``; the official val split serves as test."""
    base = require_file(root, "tiny_imagenet", ["tiny-imagenet-200/wnids.txt"], TINY_SOURCE).parent
    wnids = [w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    xs, ys = [], []
    for wnid in wnids:
        for path in sorted((base / "train" / wnid / "images").glob("*.JPEG")):
            xs.append(_read_rgb(path))
            ys.append(index[wnid])
    if not xs:
        raise ZooError(f"dataset 'tiny_imagenet': no images under {base / 'train'}")
    annotations = require_file(root, "tiny_imagenet", ["tiny-imagenet-200/val/val_annotations.txt"],
                               TINY_SOURCE)
    vx, vy = [], []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            vx.append(_read_rgb(base / "val" / "images" / parts[0]))
            vy.append(index[parts[1]])
    train = Split(_images(np.stack(xs), 255.0), torch.tensor(ys))
    test = Split(_images(np.stack(vx), 255.0), torch.tensor(vy))
    return RawData(train=train, test=test, classes=wnids)


EUROSAT_RGB_DIRS = ["2750", "eurosat/2750", "EuroSAT_RGB"]
EUROSAT_MS_DIRS = ["ds/images/remote_sensing/otherDatasets/sentinel_2/tif", "EuroSATallBands",
                   "EuroSAT_MS", "tif"]
# Band order of the 13-band GeoTIFFs: B01-B08, B09, B10, B11, B12, B8A (B8A last).
EUROSAT_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12",
                 "B8A"]


def _eurosat_folder(root: Path, candidates: list[str]) -> Path:
    for rel in candidates:
        if all((root / rel / c).is_dir() for c in EUROSAT_CLASSES):
            return root / rel
    raise ZooError(f"dataset 'eurosat': expected one class folder per class ({EUROSAT_CLASSES[0]}, "
                   f"...) under {root / candidates[0]} (or {', '.join(candidates[1:])}) - published "
                   f"at {EUROSAT_SOURCE}")


def _eurosat(root: Path, candidates: list[str], pattern: str, read, scale: float) -> RawData:
    folder = _eurosat_folder(root, candidates)
    xs, ys = [], []
    for label, name in enumerate(EUROSAT_CLASSES):
        for path in sorted((folder / name).glob(pattern), key=lambda p: p.name):
            xs.append(read(path))
            ys.append(label)
    everything = Split(_images(np.stack(xs), scale), torch.tensor(ys))

    rest, test = split_off(everything, 0.2, seed=42)
    return RawData(train=rest, test=test, classes=EUROSAT_CLASSES)


def read_geotiff(path: Path, bands: int | None = None) -> np.ndarray:
    """A GeoTIFF as [bands, H, W] in its stored dtype (single-band files: [1, H, W]; band-last
    files are transposed when ``bands`` says which axis holds them); one clear error if not."""
    import tifffile

    if not path.is_file():
        raise ZooError(f"missing file {path}")
    try:
        array = np.asarray(tifffile.imread(path))
    except (ValueError, OSError, tifffile.TiffFileError) as exc:
        raise ZooError(f"{path}: not a readable GeoTIFF ({str(exc).splitlines()[0]})") from None
    if array.size == 0:
        raise ZooError(f"{path}: not a readable GeoTIFF (no image data)")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and bands is not None and array.shape[-1] == bands != array.shape[0]:
        array = array.transpose(2, 0, 1)
    if array.ndim != 3 or (bands is not None and array.shape[0] != bands):
        raise ZooError(f"{path}: expected {bands} bands, got an array of shape {array.shape}")
    return array


@register_dataset("eurosat", val_size=0.25, source=EUROSAT_SOURCE)
def read_eurosat(root: Path) -> RawData:
    """EuroSAT RGB: ``root/2750/<Class>/<Class>_<n>.jpg``; splits 60/20/20 (16,200/5,400/5,400)."""
    return _eurosat(root, EUROSAT_RGB_DIRS, "*.jpg", _read_rgb, 255.0)


@register_dataset("eurosat_ms", val_size=0.25, source=EUROSAT_SOURCE)
def read_eurosat_ms(root: Path) -> RawData:
    """EuroSAT multispectral: 13-band GeoTIFFs ``<Class>/<Class>_<n>.tif`` (reflectance / 10,000)."""
    return _eurosat(root, EUROSAT_MS_DIRS, "*.tif", lambda path: read_geotiff(path, 13), 10_000.0)
