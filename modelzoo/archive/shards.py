"""The shard file: one HDF5 file of a range of models' states and metrics, and how one is added to
an archive crash-safely (``commit_shard``)."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from modelzoo.archive.manifest import (FORMAT, FORMAT_VERSION, PARTIAL, add_shard_entry,
                                       fsync_file, sha256_file, shard_name)

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


def commit_shard(root: Path, folder: str, entries: list[dict], start: int, stop: int,
                 shard_size: int, runs: Sequence[ModelRun], n_params: int,
                 metrics: Sequence[str], extra: dict[str, np.ndarray] | None = None,
                 stamp_format: bool = True) -> None:
    """Write the shard of models [start, stop) under ``root/.partial``, rename it into
    ``root/folder`` and record it (file, range, sha256, bytes) in ``entries``, the manifest's shard
    list (the zoo's, or a twin set's); the caller saves the manifest. A kill leaves at most a
    scratch file under ``.partial``."""
    name = shard_name(start, shard_size)
    tmp = root / PARTIAL / name
    tmp.parent.mkdir(exist_ok=True)
    write_shard_file(tmp, range(start, stop), runs, n_params, metrics, extra, stamp_format)
    final = root / folder / name
    final.parent.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(tmp)
    os.replace(tmp, final)
    add_shard_entry(entries, f"{folder}/{name}", start, stop, digest, final.stat().st_size)

