"""The zoo archive on disk: a JSON manifest plus HDF5 shards, written crash-safely.

Layout of an archive directory (documented in full in DATASET_CARD.md)::

    manifest.json          spec, parameter layout, stored epochs, model configs, completed shards
    shards/shard-00000.h5  weights [models, states, params] float32, chunked one state per chunk;
                           metrics/<name> [models, states] float32; model_ids [models] int64
    metadata.csv           one row per model-state: model, epoch, factors, metrics (when complete)
    safetensors/           optional export: one file per model, config in its metadata

A shard is written under ``.partial/`` and renamed into ``shards/`` when complete; the manifest is
replaced atomically after every shard. A killed generation therefore leaves only complete shards
(and a scratch file under ``.partial/`` that the next run removes); rerunning finishes the rest.
Files carry no timestamps, so the same zoo gives byte-identical shards.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from modelzoo.errors import ArchiveCorrupt, ZooError
from modelzoo.layout import Layout
from modelzoo.specs import ZooSpec
from modelzoo.training import METRICS, ModelRun

FORMAT = "modelzoo-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial"
MAX_CHUNK = 1 << 20  # floats per chunk: one state per chunk up to 4 MiB


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ZooError(f"{root} is not a zoo archive: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveCorrupt(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveCorrupt(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ZooError(f"{path}: format version {manifest['format_version']} is newer than this "
                       f"software reads ({FORMAT_VERSION}); upgrade modelzoo")
    return manifest


def shard_ranges(n_models: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) model ranges of the shards of a zoo."""
    return [(s, min(s + shard_size, n_models)) for s in range(0, n_models, shard_size)]


class ArchiveWriter:
    """Creates or resumes an archive and adds complete shards one at a time."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | Path, spec: ZooSpec, layout: Layout, shard_size: int) -> "ArchiveWriter":
        """A new archive at ``root``, or the existing one there if it holds the same zoo."""
        root = Path(root)
        configs = spec.configs()
        if (root / MANIFEST).exists():
            manifest = read_manifest(root)
            if manifest["fingerprint"] != spec.fingerprint():
                raise ZooError(f"{root} already holds a different zoo ({manifest['name']}); "
                               f"choose another --out")
            writer = cls(root, manifest)
        elif root.exists() and any(root.iterdir()):
            raise ZooError(f"{root} exists and is not a zoo archive; choose an empty or new --out")
        else:
            factors = spec.factor_values()
            writer = cls.create(root, {
                "name": spec.name,
                "fingerprint": spec.fingerprint(),
                "spec": spec.model_dump(mode="json"),
                "architecture": {"name": spec.architecture.name,
                                 "kwargs": spec.architecture.kwargs()},
                "n_params": layout.size,
                "layout": layout.to_json(),
                "epochs": spec.training.stored_epochs(),
                "factors": list(factors),
                "models": [{"index": i, "config": c.model_dump(mode="json"),
                            "factors": {k: getattr(c, k) for k in factors}}
                           for i, c in enumerate(configs)],
                "shard_size": shard_size,
                "task": spec.task.name,
                "primary_metric": spec.task.primary_metric,
                "metrics": spec.task.metric_names(),
            })
        shutil.rmtree(root / PARTIAL, ignore_errors=True)
        return writer

    @classmethod
    def create(cls, root: str | Path, fields: dict) -> "ArchiveWriter":
        """A new, empty archive whose manifest holds ``fields`` (name, fingerprint, spec,
        architecture, n_params, layout, epochs, factors, models, shard_size, and any extra keys)."""
        root = Path(root)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "metrics": list(METRICS),
                    **fields, "shards": [], "complete": False}
        (root / "shards").mkdir(parents=True, exist_ok=True)
        writer = cls(root, manifest)
        writer.save_manifest()
        return writer

    @property
    def n_models(self) -> int:
        return len(self.manifest["models"])

    def pending(self) -> list[tuple[int, int]]:
        """Shard ranges not yet written."""
        done = {tuple(s["models"]) for s in self.manifest["shards"]}
        return [r for r in shard_ranges(self.n_models, self.manifest["shard_size"]) if r not in done]

    def save_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=False) + "\n"
        write_atomic(self.root / MANIFEST, text.encode())

    def write_shard(self, start: int, stop: int, runs: list[ModelRun]) -> None:
        """Write the shard of models [start, stop) and record it in the manifest."""
        name = shard_name(start, self.manifest["shard_size"])
        partial = self.root / PARTIAL
        partial.mkdir(exist_ok=True)
        tmp = partial / name
        write_shard_file(tmp, range(start, stop), runs, self.manifest["n_params"],
                         self.manifest["metrics"])
        final = self.root / "shards" / name
        digest = sha256_file(tmp)
        os.replace(tmp, final)
        self.manifest["shards"].append({"file": f"shards/{name}", "models": [start, stop],
                                        "sha256": digest, "bytes": final.stat().st_size})
        self.manifest["shards"].sort(key=lambda s: s["models"][0])
        self.save_manifest()

    def finalize(self) -> None:
        """Write the metadata table and mark the archive complete."""
        shutil.rmtree(self.root / PARTIAL, ignore_errors=True)
        from modelzoo.zoo import Zoo

        table = Zoo(self.root, self.manifest).metadata
        write_atomic(self.root / "metadata.csv", table.to_csv(index=False).encode())
        self.manifest["complete"] = True
        self.save_manifest()


def shard_name(start: int, shard_size: int) -> str:
    return f"shard-{start // shard_size:05d}.h5"


def write_shard_file(path: Path, model_ids: range, runs: list[ModelRun], n_params: int,
                     metrics: list[str] = METRICS) -> None:
    """One HDF5 shard: weights [m, s, p], metrics/<name> [m, s], model_ids [m]; no timestamps."""
    weights = np.stack([r.states for r in runs]).astype(np.float32, copy=False)
    if weights.shape[2] != n_params:
        raise ValueError(f"states have {weights.shape[2]} values, layout has {n_params}")
    chunk = (1, 1, min(n_params, MAX_CHUNK))
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.create_dataset("weights", data=weights, chunks=chunk, track_times=False)
        f.create_dataset("model_ids", data=np.asarray(model_ids, dtype=np.int64), track_times=False)
        for metric in metrics:
            values = np.stack([r.metrics[metric] for r in runs]).astype(np.float32)
            f.create_dataset(f"metrics/{metric}", data=values, track_times=False)
        f.flush()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def validate_archive(root: str | Path) -> list[str]:
    """Problems found in an archive (empty when sound): manifest, checksums, shapes, NaNs."""
    root = Path(root)
    try:
        manifest = read_manifest(root)
    except ZooError as exc:
        return [str(exc)]
    problems = []
    n_states, n_params = len(manifest["epochs"]), manifest["n_params"]
    unrecorded = set(manifest.get("unrecorded_metrics", []))  # imported: NaN = not recorded
    covered = []
    for shard in manifest["shards"]:
        path = root / shard["file"]
        start, stop = shard["models"]
        covered.extend(range(start, stop))
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        if sha256_file(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 mismatch (file is corrupt or was changed)")
            continue
        try:
            with h5py.File(path, "r") as f:
                expected = (stop - start, n_states, n_params)
                if f["weights"].shape != expected:
                    problems.append(f"{shard['file']}: weights shape {f['weights'].shape}, "
                                    f"expected {expected}")
                    continue
                for i in range(stop - start):
                    if not np.isfinite(f["weights"][i]).all():
                        problems.append(f"{shard['file']}: model {start + i} has NaN/inf weights")
                for metric in manifest["metrics"]:
                    values = f[f"metrics/{metric}"][()]
                    if values.shape != expected[:2]:
                        problems.append(f"{shard['file']}: metrics/{metric} shape {values.shape}")
                    elif np.isnan(values).any() and metric not in unrecorded:
                        problems.append(f"{shard['file']}: metrics/{metric} has NaN")
                if not np.array_equal(f["model_ids"][()], np.arange(start, stop)):
                    problems.append(f"{shard['file']}: model_ids do not match the manifest")
        except (OSError, KeyError) as exc:
            problems.append(f"{shard['file']}: unreadable ({exc})")
    if manifest.get("complete") and sorted(covered) != list(range(len(manifest["models"]))):
        problems.append("manifest: complete, but shards do not cover every model exactly once")
    from modelzoo.sparsify import twin_shard_problems

    problems.extend(twin_shard_problems(root, manifest))
    for item in manifest.get("exports", []):
        path = root / item["file"]
        if not path.is_file():
            problems.append(f"{item['file']}: missing")
        elif sha256_file(path) != item["sha256"]:
            problems.append(f"{item['file']}: sha256 mismatch (file is corrupt or was changed)")
    return problems
