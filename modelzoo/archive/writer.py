"""Writing an archive: ``ArchiveWriter`` adds complete shards one at a time, crash-safely.

Layout of an archive directory (documented in full in DATASET_CARD.md)::

    manifest.json          spec, parameter layout, stored epochs, model configs, completed shards
    shards/shard-00000.h5  weights [models, states, params] float32, chunked one state per chunk;
                           metrics/<name> [models, states] float32; model_ids [models] int64
    metadata.csv           one row per model-state: model, epoch, factors, metrics (when complete)
    twins/<name>/          sparsified twins (``modelzoo.archive.twins``)
    safetensors/           optional export: one file per model, config in its metadata

A shard is written under ``.partial/`` and renamed into ``shards/`` when complete; the manifest is
replaced atomically after every shard. A killed generation therefore leaves only complete shards
(and a scratch file under ``.partial/`` that the next run removes); rerunning finishes the rest.
Files carry no timestamps, so the same zoo gives byte-identical shards.
"""

import shutil
from collections.abc import Sequence
from pathlib import Path

from modelzoo.archive.manifest import (
    LOCK,
    MANIFEST,
    PARTIAL,
    Manifest,
    write_atomic,
)
from modelzoo.archive.reader import ArchiveReader
from modelzoo.archive.shards import ModelRun, commit_shard
from modelzoo.errors import ZooError


class ArchiveWriter:
    """Creates or resumes an archive and adds complete shards one at a time."""

    def __init__(self, root: str | Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | Path, manifest: Manifest) -> "ArchiveWriter":
        """A new archive at ``root`` with ``manifest``, or the one already there if it holds the
        same zoo (same fingerprint): then its completed shards are kept."""
        root = Path(root)
        if (root / MANIFEST).exists():
            existing = Manifest.read(root)
            if existing.fingerprint != manifest.fingerprint:
                raise ZooError(f"{root} already holds a different zoo ({existing.name}); "
                               f"choose another --out")
            writer = cls(root, existing)
        elif root.exists() and any(p.name != LOCK for p in root.iterdir()):
            raise ZooError(f"{root} exists and is not a zoo archive; choose an empty or new --out")
        else:
            writer = cls.create(root, manifest)
        shutil.rmtree(root / PARTIAL, ignore_errors=True)
        return writer

    @classmethod
    def create(cls, root: str | Path, manifest: Manifest) -> "ArchiveWriter":
        """A new, empty archive with ``manifest`` (``Manifest.new``)."""
        root = Path(root)
        (root / "shards").mkdir(parents=True, exist_ok=True)
        writer = cls(root, manifest)
        writer.save_manifest()
        return writer

    @property
    def n_models(self) -> int:
        return self.manifest.n_models

    def pending(self) -> list[tuple[int, int]]:
        """Shard ranges not yet written."""
        return self.manifest.pending()

    def save_manifest(self) -> None:
        self.manifest.save(self.root)

    def write_shard(self, start: int, stop: int, runs: Sequence[ModelRun]) -> None:
        """Write the shard of models [start, stop) and record it in the manifest."""
        commit_shard(self.root, "shards", self.manifest.shards, start, stop,
                     self.manifest.shard_size, runs, self.manifest.n_params, self.manifest.metrics)
        self.save_manifest()

    def write_all(self, runs: Sequence[ModelRun]) -> None:
        """Write every model's run (one per planned model) shard by shard and finalize."""
        for start, stop in self.pending():
            self.write_shard(start, stop, runs[start:stop])
        self.finalize()

    def finalize(self) -> None:
        """Write the metadata table and mark the archive complete."""
        shutil.rmtree(self.root / PARTIAL, ignore_errors=True)
        with ArchiveReader(self.root, self.manifest) as reader:
            table = reader.metadata
        write_atomic(self.root / "metadata.csv", table.to_csv(index=False).encode())
        self.manifest.mark_complete()
        self.save_manifest()
