"""``zoo validate``: every check an archive must pass (manifest, checksums, shapes, NaNs)."""

from pathlib import Path

import h5py
import numpy as np

from modelzoo.archive.manifest import Manifest, sha256_file
from modelzoo.archive.twins import twin_shard_problems
from modelzoo.errors import ZooError


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
    for item in manifest.exports:
        path = root / item["file"]
        if not path.is_file():
            problems.append(f"{item['file']}: missing")
        elif sha256_file(path) != item["sha256"]:
            problems.append(f"{item['file']}: sha256 mismatch (file is corrupt or was changed)")
    return problems
