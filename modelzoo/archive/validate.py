"""``zoo validate``: every check an archive must pass (manifest, checksums, shapes, NaNs)."""

import math
from pathlib import Path

import h5py
import numpy as np

from modelzoo.archive.manifest import Manifest, sha256_file
from modelzoo.errors import ZooError


def file_problem(root: Path, item: dict) -> str | None:
    """What is wrong with a file the manifest lists (``file``, ``sha256``): missing or changed."""
    path = root / item["file"]
    if not path.is_file():
        return f"{item['file']}: missing"
    if sha256_file(path) != item["sha256"]:
        return f"{item['file']}: sha256 mismatch (file is corrupt or was changed)"
    return None


def validate_archive(root: str | Path) -> list[str]:
    """Problems found in an archive (empty when sound): manifest, checksums, shapes, NaNs."""
    root = Path(root)
    try:
        manifest = Manifest.read(root)
    except ZooError as exc:
        return [str(exc)]
    problems = []
    n_states, n_params = len(manifest.epochs), manifest.n_params
    unrecorded = manifest.unrecorded_metrics  # imported: NaN = not recorded
    # imported states the source lacks or holds diverged: NaN there is the source's, not damage
    flagged = manifest.missing_states | manifest.nonfinite_states
    epochs = manifest.epochs
    covered = []
    for shard in manifest.shards:
        path = root / shard["file"]
        start, stop = shard["models"]
        covered.extend(range(start, stop))
        if problem := file_problem(root, shard):
            problems.append(problem)
            continue
        try:
            with h5py.File(path, "r") as f:
                expected = (stop - start, n_states, n_params)
                if f["weights"].shape != expected:
                    problems.append(f"{shard['file']}: weights shape {f['weights'].shape}, "
                                    f"expected {expected}")
                    continue
                # bool [models, states]: the states whose NaNs come from the source
                allowed = np.array([[(m, e) in flagged for e in epochs]
                                    for m in range(start, stop)]).reshape(expected[:2])
                for i in range(stop - start):
                    finite = np.isfinite(f["weights"][i]).all(axis=1)
                    if not (finite | allowed[i]).all():
                        problems.append(f"{shard['file']}: model {start + i} has NaN/inf weights")
                for metric in manifest.metrics:
                    values = f[f"metrics/{metric}"][()]
                    if values.shape != expected[:2]:
                        problems.append(f"{shard['file']}: metrics/{metric} shape {values.shape}")
                    elif (np.isnan(values) & ~allowed).any() and metric not in unrecorded:
                        problems.append(f"{shard['file']}: metrics/{metric} has NaN")
                if not np.array_equal(f["model_ids"][()], np.arange(start, stop)):
                    problems.append(f"{shard['file']}: model_ids do not match the manifest")
        except (OSError, KeyError) as exc:
            problems.append(f"{shard['file']}: unreadable ({exc})")
    if manifest.complete and sorted(covered) != list(range(manifest.n_models)):
        problems.append("manifest: complete, but shards do not cover every model exactly once")
    problems.extend(twin_shard_problems(root, manifest))
    problems.extend(p for item in manifest.exports if (p := file_problem(root, item)))
    return problems


def twin_shard_problems(root: Path, manifest: Manifest) -> list[str]:
    """Checksums and shapes of the twin shards listed in the manifest."""
    problems = []
    for entry in manifest.twins.values():
        for shard in entry["shards"]:
            if problem := file_problem(root, shard):
                problems.append(problem)
            else:
                with h5py.File(root / shard["file"], "r") as f:
                    expected = (shard["models"][1] - shard["models"][0],
                                entry["finetune_epochs"] + 1, manifest.n_params)
                    if f["weights"].shape != expected:
                        problems.append(f"{shard['file']}: weights shape {f['weights'].shape}, "
                                        f"expected {expected}")
                    if f["masks"].shape[1] != math.ceil(manifest.n_params / 8):
                        problems.append(f"{shard['file']}: masks shape {f['masks'].shape}")
    return problems
