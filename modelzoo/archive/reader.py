"""Reading an archive without torch: ``ArchiveReader`` gives flat weights, metrics and the metadata
table as numpy / pandas. ``modelzoo.zoo.Zoo`` builds on it (specs, configs, ready models)."""

from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from modelzoo.archive.layout import Layout
from modelzoo.archive.manifest import Manifest
from modelzoo.archive.twins import Twins
from modelzoo.errors import ArchiveCorrupt, ZooError

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


class ArchiveReader:
    """An archive: models (global indices 0..n-1) x stored epochs of flat weights and metrics.

    Only models in completed shards are readable; ``complete`` says whether the zoo is whole.
    """

    def __init__(self, root: str | Path, manifest: Manifest | None = None):
        self.root = Path(root)
        self.manifest = manifest if manifest is not None else Manifest.read(self.root)
        self.layout: Layout = self.manifest.layout
        self._files: dict[str, h5py.File] = {}
        self._where: dict[int, tuple[dict, int]] = {}
        for shard in self.manifest.shards:
            start, stop = shard["models"]
            for m in range(start, stop):
                self._where[m] = (shard, m - start)

    # -- description -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, models={len(self)}, epochs={self.epochs}, "
                f"params={self.n_params})")

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    @property
    def epochs(self) -> list[int]:
        """The stored epochs (0 = before training)."""
        return self.manifest.epochs

    @property
    def n_params(self) -> int:
        return self.manifest.n_params

    @property
    def model_ids(self) -> list[int]:
        return sorted(self._where)

    @property
    def task(self) -> str:
        """The training objective ('classification' or a remote-sensing task)."""
        return self.manifest.task

    @property
    def primary_metric(self) -> str:
        """The per-split metric playing test accuracy's role: test_<primary> ('acc', 'r2', ...)."""
        return self.manifest.primary_metric

    @property
    def factor_names(self) -> list[str]:
        return self.manifest.factors

    @property
    def twin_names(self) -> list[str]:
        """The sparsified twin sets stored with the zoo (``zoo sparsify``), e.g. magnitude-global-0.5."""
        return list(self.manifest.twins)

    def twin(self, name: str) -> Twins:
        """One twin set: weights, masks, sparsity, metrics."""
        if name not in self.manifest.twins:
            raise ZooError(f"no twins {name!r} in this zoo; stored: {self.twin_names or 'none'}")
        return Twins(self.root, name, self.manifest.twins[name], self.n_params)

    # -- bulk reads --------------------------------------------------------------------------
    def _file(self, shard: dict) -> h5py.File:
        if shard["file"] not in self._files:
            path = self.root / shard["file"]
            try:
                self._files[shard["file"]] = h5py.File(path, "r")
            except OSError as exc:
                raise ZooError(f"{path}: cannot open shard ({exc})") from None
        return self._files[shard["file"]]

    def _read(self, shard: dict, key: str, selection=()) -> np.ndarray:
        """``shard[key][selection]``; a damaged file is one ``ArchiveCorrupt`` naming it."""
        try:
            values = self._file(shard)[key][selection]
        except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise ArchiveCorrupt(f"{self.root / shard['file']}: cannot read {key} ({reason}); "
                                 f"zoo validate names what is broken") from None
        start, stop = shard["models"]
        if selection == () or isinstance(selection[0], slice):  # whole shards: one row per model
            states = len(self.epochs) if selection == () else len(selection[1])
            if values.ndim < 2 or values.shape[:2] != (stop - start, states):
                raise ArchiveCorrupt(f"{self.root / shard['file']}: {key} is {values.shape}, the "
                                     f"manifest says {stop - start} models x {states} states")
        return values

    def _state_index(self, epoch: int) -> int:
        try:
            return self.epochs.index(epoch)
        except ValueError:
            raise ZooError(f"epoch {epoch} is not stored; stored epochs: {self.epochs}") from None

    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric as float32 [models, states], rows in ``model_ids`` order."""
        shards = self.manifest.shards
        return {metric: np.concatenate([self._read(s, f"metrics/{metric}") for s in shards])
                if shards else np.zeros((0, len(self.epochs)), np.float32)
                for metric in self.manifest.metrics}

    def weights(self, epochs: list[int] | None = None) -> np.ndarray:
        """All models' flat weights float32 [models, len(epochs), params], read shard by shard."""
        shards = self.manifest.shards
        if epochs is None:
            parts = [self._read(s, "weights") for s in shards]
        else:
            idx = sorted({self._state_index(e) for e in epochs})
            if idx != [self._state_index(e) for e in epochs]:
                raise ZooError("epochs must be distinct and increasing")
            parts = [self._read(s, "weights", (slice(None), idx, slice(None))) for s in shards]
        if not parts:
            return np.zeros((0, len(epochs or self.epochs), self.n_params), np.float32)
        return np.concatenate(parts)

    @cached_property
    def metadata(self) -> pd.DataFrame:
        """One row per model-state: model, epoch, factors, metrics and generalisation gap."""
        metrics = self.metrics()
        models = np.repeat(self.model_ids, len(self.epochs))
        table = {"model": models, "epoch": np.tile(self.epochs, len(self))}
        for factor in self.factor_names:
            table[factor] = [self.manifest.model_factors(m)[factor] for m in models]
        for metric, values in metrics.items():
            table[metric] = values.reshape(-1)
        primary = self.primary_metric
        table["gap"] = table[f"train_{primary}"] - table[f"test_{primary}"]
        return pd.DataFrame(table)

    # -- single models -----------------------------------------------------------------------
    def flat(self, model: int, epoch: int) -> np.ndarray:
        """One stored state as a flat float32 vector [params]."""
        if model not in self._where:
            raise ZooError(f"model {model} is not in this archive (models: {len(self)})")
        shard, local = self._where[model]
        return self._read(shard, "weights", (local, self._state_index(epoch)))

    def split_models(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded 70/15/15 split of the model ids into train / val / test (no model in two)."""
        ids = np.array(self.model_ids)
        order = np.random.default_rng(seed).permutation(len(ids))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(ids)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(ids)))
        return {"train": np.sort(ids[order[:n_train]]),
                "val": np.sort(ids[order[n_train:n_train + n_val]]),
                "test": np.sort(ids[order[n_train + n_val:]])}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
