"""Multi-input task data (paired Sentinel views, images + weather, S2 + S5P) and the published
preprocessing of Sentinel-1/2 patches.

A ``TaskSplit`` holds named tensors with the same first dimension, e.g. ``s1`` float32 [N, 2, H, W],
``s2`` [N, 13, H, W], ``label`` int64 [N]; ``TaskData`` holds train / val / test splits and the
data set's facts (class names, which keys are model inputs).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from modelzoo.errors import ZooError

DFC2020_CLASSES = ["Forest", "Shrubland", "Grassland", "Wetlands", "Croplands", "Urban", "Barren",
                   "Water"]
S1_CLIP_DB = (-25.0, 0.0)
S2_CLIP = (0.0, 10_000.0)


@dataclass
class TaskSplit:
    """Named tensors sharing their first dimension (the samples)."""

    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def take(self, index: torch.Tensor) -> "TaskSplit":
        return TaskSplit({k: v[index] for k, v in self.tensors.items()})

    def to(self, device) -> "TaskSplit":
        return TaskSplit({k: v.to(device) for k, v in self.tensors.items()})

    def batches(self, size: int):
        """Consecutive sub-splits of at most ``size`` samples (evaluation order)."""
        for start in range(0, len(self), size):
            yield TaskSplit({k: v[start:start + size] for k, v in self.tensors.items()})


@dataclass
class TaskData:
    """Train / val / test ``TaskSplit``s; ``inputs`` names the keys fed to the model."""

    name: str
    train: TaskSplit
    val: TaskSplit
    test: TaskSplit
    inputs: list[str]
    classes: list[str] = field(default_factory=list)

    def on(self, device) -> dict[str, TaskSplit]:
        return {"train": self.train.to(device), "val": self.val.to(device),
                "test": self.test.to(device)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[self.inputs[0]].shape[1:])


def split_task_data(name: str, everything: dict[str, np.ndarray | torch.Tensor], inputs: list[str],
                    classes: list[str], val_size: float, test_size: float, seed: int) -> TaskData:
    """Seeded random train / val / test split of all samples (fractions of the total)."""
    tensors = {k: torch.as_tensor(v) for k, v in everything.items()}
    n = len(next(iter(tensors.values())))
    n_val, n_test = int(round(val_size * n)), int(round(test_size * n))
    if n - n_val - n_test < 2 or n_val < 1 or (n_test < 1 and test_size > 0):
        raise ZooError(f"dataset {name!r}: {n} samples are too few for a train / val / test split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = (order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test])
    train, val, test = (TaskSplit({k: v[p.sort().values] for k, v in tensors.items()})
                        for p in parts)
    return TaskData(name, train, val, test, inputs, classes)


def with_test_split(name: str, everything: dict, test: dict, inputs: list[str],
                    classes: list[str], val_size: float, seed: int) -> TaskData:
    """Seeded train / val split of ``everything``; the publisher's ``test`` samples as test."""
    data = split_task_data(name, everything, inputs, classes, val_size, 0.0, seed)
    data.test = TaskSplit({k: torch.as_tensor(v) for k, v in test.items()})
    if len(data.test) < 1:
        raise ZooError(f"dataset {name!r}: the test split is empty")
    return data


def preprocess_s1(db: np.ndarray) -> np.ndarray:
    """Sentinel-1 backscatter in dB [..., 2, H, W]: clip to [-25, 0], add 25, divide each channel
    by its per-sample maximum (as published for the Dual-SSL models)."""
    x = np.clip(db, *S1_CLIP_DB) + 25.0
    return (x / np.maximum(x.max(axis=(-2, -1), keepdims=True), 1e-6)).astype(np.float32)


def preprocess_s2(reflectance: np.ndarray) -> np.ndarray:
    """Sentinel-2 reflectance (0..10,000) [..., C, H, W]: clip, divide each channel by its
    per-sample maximum."""
    x = np.clip(reflectance.astype(np.float32), *S2_CLIP)
    return (x / np.maximum(x.max(axis=(-2, -1), keepdims=True), 1e-6)).astype(np.float32)


def dfc_labels(land_cover: np.ndarray, num_classes: int = 8,
               multi_threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """From land-cover maps int [N, H, W] (class ids, -1 = ignored): single labels int64 [N]
    (majority class) and multi-labels float32 [N, num_classes] (classes covering >= 10%)."""
    n = len(land_cover)
    counts = np.stack([(land_cover.reshape(n, -1) == c).sum(1) for c in range(num_classes)], 1)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return counts.argmax(1).astype(np.int64), (share >= multi_threshold).astype(np.float32)
