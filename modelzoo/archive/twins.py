"""The twin format: sparsified twins of a zoo's models, stored beside the dense states.

``twins/<name>/shard-NNNNN.h5`` holds ``weights`` float32 [models, K + 1, params] (state 0 = pruned,
before fine-tuning), ``masks`` uint8 [models, ceil(params / 8)] (``np.packbits`` of the keep mask),
``sparsity`` float32 [models] (fraction of prunable weights that are zero), ``metrics/<name>``
[models, K + 1] and ``model_ids``. The manifest's ``twins`` entry (settings, shards with sha256
sums, ``complete``) lists them. ``modelzoo.sparsify`` makes them; ``Twins`` reads them.
"""

import shutil
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from modelzoo.archive.layout import Layout
from modelzoo.archive.manifest import METRICS, PARTIAL, Manifest
from modelzoo.archive.shards import ModelRun, commit_shard


def prunable(layout: Layout) -> np.ndarray:
    """bool [params]: the values pruning may zero (weight tensors with 2+ dims, i.e. conv and
    linear kernels; not biases, not BatchNorm parameters or statistics)."""
    out = np.zeros(layout.size, dtype=bool)
    for e in layout.entries:
        if e.kind == "param" and len(e.shape) >= 2:
            out[e.offset:e.offset + e.size] = True
    return out


def sparsity(flat: np.ndarray, layout: Layout) -> np.ndarray:
    """Fraction [N] of prunable values that are exactly zero."""
    values = np.atleast_2d(flat)[:, prunable(layout)]
    return (values == 0).mean(axis=1).astype(np.float32)


def write_twin_shard(root: Path, manifest: Manifest, entry: dict, start: int, stop: int,
                     runs: Sequence[ModelRun], masks: np.ndarray) -> None:
    """Write the twin shard of models [start, stop) of the twin set ``entry`` (runs: ``ModelRun``
    per model, masks: bool [models, params]) and record it in the manifest, crash-safely."""
    layout = manifest.layout
    final_states = np.stack([r.states[-1] for r in runs]).astype(np.float32)
    commit_shard(root, f"twins/{entry['name']}", entry["shards"], start, stop,
                 manifest.shard_size, runs, layout.size, METRICS, stamp_format=False,
                 extra={"masks": np.packbits(masks, axis=1),
                        "sparsity": sparsity(final_states, layout)})
    manifest.save(root)
    shutil.rmtree(root / PARTIAL, ignore_errors=True)


class Twins:
    """One twin set of a zoo (read-only): weights, keep masks, sparsity and metrics per model."""

    def __init__(self, root: Path, name: str, entry: dict, n_params: int):
        self.root, self.name, self.entry, self.n_params = Path(root), name, entry, n_params
        self.epochs = list(range(entry["finetune_epochs"] + 1))  # fine-tuning epochs, 0 = pruned

    @property
    def from_epoch(self) -> int:
        """The zoo epoch whose states were pruned."""
        return self.entry["from_epoch"]

    def _read(self, key: str) -> np.ndarray:
        parts = []
        for shard in self.entry["shards"]:
            with h5py.File(self.root / shard["file"], "r") as f:
                parts.append(f[key][()])
        return np.concatenate(parts) if parts else np.zeros((0,))

    def weights(self) -> np.ndarray:
        """float32 [models, fine-tuning states, params]."""
        return self._read("weights")

    def masks(self) -> np.ndarray:
        """bool [models, params], True = kept."""
        return np.unpackbits(self._read("masks"), axis=1, count=self.n_params).astype(bool)

    def sparsity(self) -> np.ndarray:
        return self._read("sparsity")

    def metrics(self) -> dict[str, np.ndarray]:
        return {m: self._read(f"metrics/{m}") for m in METRICS}

    @property
    def metadata(self) -> pd.DataFrame:
        """One row per model x fine-tuning epoch: metrics and the twin's sparsity."""
        metrics = self.metrics()
        n = len(metrics["test_acc"])
        table = {"model": np.repeat(self._read("model_ids"), len(self.epochs)),
                 "epoch": np.tile(self.epochs, n),
                 "sparsity": np.repeat(self.sparsity(), len(self.epochs))}
        table.update({m: v.reshape(-1) for m, v in metrics.items()})
        return pd.DataFrame(table)
