"""The shard file: one HDF5 file of a range of models' states and metrics."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from modelzoo.archive.manifest import FORMAT, FORMAT_VERSION, fsync_file

MAX_CHUNK = 1 << 20  # floats per chunk: one state per chunk up to 4 MiB


@dataclass
class ModelRun:
    """What training hands the archive for one model: flat states float32 [stored epochs, params]
    and each metric float32 [stored epochs]."""

    states: np.ndarray
    metrics: dict[str, np.ndarray]


def write_shard_file(path: Path, model_ids: range, runs: Sequence[ModelRun], n_params: int,
                     metrics: Sequence[str], extra: dict[str, np.ndarray] | None = None,
                     stamp_format: bool = True) -> None:
    """One HDF5 shard: weights [m, s, p], metrics/<name> [m, s], model_ids [m] and any ``extra``
    datasets (twin shards: masks, sparsity); no timestamps, fsynced. ``stamp_format``: the format
    name and version as file attributes (zoo shards; twin shards have never carried them)."""
    weights = np.stack([r.states for r in runs]).astype(np.float32, copy=False)
    if weights.shape[2] != n_params:
        raise ValueError(f"states have {weights.shape[2]} values, layout has {n_params}")
    chunk = (1, 1, min(n_params, MAX_CHUNK))
    with h5py.File(path, "w") as f:
        if stamp_format:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
        f.create_dataset("weights", data=weights, chunks=chunk, track_times=False)
        for key, values in (extra or {}).items():
            f.create_dataset(key, data=values, track_times=False)
        f.create_dataset("model_ids", data=np.asarray(model_ids, dtype=np.int64), track_times=False)
        for metric in metrics:
            values = np.stack([r.metrics[metric] for r in runs]).astype(np.float32)
            f.create_dataset(f"metrics/{metric}", data=values, track_times=False)
        f.flush()
    fsync_file(path)
