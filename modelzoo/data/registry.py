"""Data set registry, shared preprocessing and the train/val split."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from modelzoo.data.task_data import TaskData
from modelzoo.errors import ZooError


@dataclass
class Split:
    """One split: images float32 [N, C, H, W], labels int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class RawData:
    """What a reader returns: images scaled to [0, 1] (float32 [N, C, H, W]) and labels.

    ``val`` is None when the publisher has no validation split (one is then cut from train).
    """

    train: Split
    test: Split
    classes: list[str]
    val: Split | None = None


@dataclass
class DataSplits:
    """Normalised train / val / test splits of one data set."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def on(self, device: str | torch.device) -> dict[str, Split]:
        """The three splits moved to ``device``, keyed 'train', 'val', 'test'."""
        return {name: Split(s.x.to(device), s.y.to(device))
                for name, s in (("train", self.train), ("val", self.val), ("test", self.test))}


@dataclass
class DatasetEntry:
    """A registered data set: its reader, default validation size and where it is published."""

    reader: Callable[..., RawData]
    val_size: int | float
    source: str
    needs_root: bool = True
    preprocessing: dict | None = None  # published defaults: grayscale, center_crop, resize
    task_data: bool = False  # the reader returns ready ``TaskData`` (remote-sensing tasks)


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, val_size: int | float, source: str, needs_root: bool = True,
                     task_data: bool = False, **preprocessing):
    """Decorator registering a reader ``fn(root: Path) -> RawData`` under ``name``.

    ``preprocessing``: the defaults of the published zoos for this data set (grayscale, ...).
    """

    def wrap(fn):
        DATASETS[name] = DatasetEntry(fn, val_size, source, needs_root, preprocessing, task_data)
        return fn

    return wrap


def _grayscale(x: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """One channel: ITU-R 601 luma of the RGB channels, or (``mean``) the mean of all channels."""
    if x.shape[1] == 1:
        return x
    if mean:
        return x.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x[:, :3] * weights).sum(dim=1, keepdim=True)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = [F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True) for chunk in x.split(4096)]
    return torch.cat(out)


def preprocess(x: torch.Tensor, grayscale=False, center_crop=None, resize=None,
               grayscale_mean=False) -> torch.Tensor:
    """Grayscale, then centre crop, then resize (each optional), on float images [N, C, H, W]."""
    if grayscale:
        x = _grayscale(x, grayscale_mean)
    if center_crop:
        x = _center_crop(x, center_crop)
    if resize:
        x = _resize(x, resize)
    return x


def split_off(split: Split, size: int | float, seed: int) -> tuple[Split, Split]:
    """Seeded random split of ``split`` into (rest, held-out) with ``size`` items (or fraction)."""
    n = len(split)
    k = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 0 < k < n:
        raise ZooError(f"cannot hold out {size} of {n} items for validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, rest = order[:k].sort().values, order[k:].sort().values
    return Split(split.x[rest], split.y[rest]), Split(split.x[held], split.y[held])


def create_dataset(name: str, root: str | Path | None = None, grayscale: bool | None = None,
                   center_crop: int | None = None, resize: int | None = None,
                   val_size: int | float | None = None, split_seed: int = 42,
                   options: dict | None = None, scale: str = "standardize") -> DataSplits | TaskData:
    """Load, preprocess, split and normalise a registered data set.

    Image-classification data sets return ``DataSplits``; task data sets (registered with
    ``task_data=True``) return the ``TaskData`` their reader builds.

    Options left as None take the data set's published defaults. The validation split is cut from
    the training split with a seeded random split (seed 42 as in the published zoos) unless the
    publisher ships one. ``scale="standardize"``: the train split's per-channel mean and std;
    ``"symmetric"``: pixels [0, 1] -> [-1, 1], grayscale as the channel mean (the Small CNN Zoo).
    """
    if name not in DATASETS:
        raise ZooError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    entry = DATASETS[name]
    if entry.needs_root:
        if root is None:
            raise ZooError(f"dataset {name!r} needs a data folder: set dataset.root in the spec or "
                           f"--data-root (published at {entry.source})")
        root = Path(root)
        if not root.is_dir():
            raise ZooError(f"dataset {name!r}: data folder {root} does not exist "
                           f"(published at {entry.source})")
    args = (root,) if entry.needs_root else ()
    if entry.task_data:  # remote-sensing task data: the reader splits and preprocesses
        try:
            inspect.signature(entry.reader).bind(*args, **(options or {}))
        except TypeError as exc:
            raise ZooError(f"dataset {name!r} options: {exc}") from None
        return entry.reader(*args, **(options or {}))
    if options:
        raise ZooError(f"dataset {name!r} takes no options")
    raw = entry.reader(*args)
    opts = dict(entry.preprocessing or {})
    for key, value in (("grayscale", grayscale), ("center_crop", center_crop), ("resize", resize)):
        if value is not None:
            opts[key] = value
    train, test = raw.train, raw.test
    val = raw.val
    if val is None:
        train, val = split_off(train, entry.val_size if val_size is None else val_size, split_seed)
    if scale not in ("standardize", "symmetric"):
        raise ZooError(f"dataset {name!r}: scale {scale!r}: use standardize or symmetric")
    symmetric = scale == "symmetric"
    splits = [Split(preprocess(s.x * 2 - 1 if symmetric else s.x, **opts, grayscale_mean=symmetric),
                    s.y) for s in (train, val, test)]
    if symmetric:
        train, val, test = (Split(s.x.contiguous(), s.y.long()) for s in splits)
        return DataSplits(name, train, val, test, list(raw.classes))
    mean = splits[0].x.mean(dim=(0, 2, 3), keepdim=True)
    std = splits[0].x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    train, val, test = (Split(((s.x - mean) / std).contiguous(), s.y.long()) for s in splits)
    return DataSplits(name, train, val, test, list(raw.classes))


def require_file(root: Path, dataset: str, candidates: list[str], source: str) -> Path:
    """The first of ``candidates`` (paths relative to root) that exists, or one clear error."""
    for rel in candidates:
        path = root / rel
        if path.exists():
            return path
    raise ZooError(f"dataset {dataset!r}: expected {root / candidates[0]} (or "
                   f"{', '.join(candidates[1:]) or 'nothing else'}) - published at {source}")
