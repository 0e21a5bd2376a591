"""Zoos on the Hugging Face Hub: ``upload_zoo``, ``download_zoo`` and the generated dataset card.

A zoo is a dataset repository holding the archive's files unchanged (manifest.json, metadata.csv,
shards/*.h5, safetensors/*) plus README.md, the dataset card with the YAML header the Hub reads
(the dataset viewer shows metadata.csv). Upload is one commit; LFS / Xet transfers and the token come
from huggingface_hub (``HF_TOKEN`` or ``hf auth login``; we never print or store it).

Download goes through the Hub cache (resumable, shared between downloads, ``HF_HUB_OFFLINE=1`` reads
from it), then the files are linked or copied into a hidden folder beside ``--out``, checked against
the manifest's sha256 sums and renamed into place: a tampered or truncated file fails with one error
and leaves nothing behind. ``--include`` patterns select files (e.g. ``shards/shard-0000[0-4].h5``);
the manifest of such a partial copy lists only the shards it holds and is marked incomplete.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from modelzoo.archive import (
    ArchiveReader,
    Manifest,
    atomic_directory,
    validate_archive,
)
from modelzoo.archive.manifest import MANIFEST
from modelzoo.errors import ZooError

ALWAYS = ("manifest.json", "metadata.csv", "README.md")


def _hub_errors():
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    return HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled


def _quiet_unless_terminal() -> None:
    """huggingface_hub's byte progress bars only on a terminal (logs and pipes stay clean)."""
    from huggingface_hub.utils import disable_progress_bars

    if not sys.stderr.isatty():
        disable_progress_bars()


def _explain(exc: Exception) -> ZooError:
    """One line for a Hub failure (the library's messages carry URLs, never the token)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ZooError(f"Hub: {first}")


def upload_zoo(root: Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload a complete, valid archive to the dataset repo ``repo_id`` (created if missing) as
    one commit on ``revision`` (a branch, created from main if missing). Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    root = Path(root)
    problems = validate_archive(root)
    if problems:
        raise ZooError(f"{root}: not uploading an invalid archive ({problems[0]})")
    manifest = Manifest.read(root)
    if not manifest.complete:
        raise ZooError(f"{root}: the archive is incomplete; finish it (zoo generate --resume) first")
    files = archive_files(root)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(root / f)) for f in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md",
                                         path_or_fileobj=dataset_card(root).encode()))
    api = HfApi()
    _quiet_unless_terminal()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        info = api.create_commit(repo_id, operations, repo_type="dataset", revision=revision,
                                 commit_message=f"Upload zoo {manifest.name} "
                                                f"({manifest.n_models} models)")
    except _hub_errors() as exc:
        raise _explain(exc) from None
    return info.commit_url


def archive_files(root: Path) -> list[str]:
    """The archive's files (POSIX paths relative to ``root``) that make up the zoo."""
    files = [MANIFEST] + [item["file"] for item in Manifest.read(root).files()]
    if (root / "metadata.csv").is_file():
        files.append("metadata.csv")
    return files


def download_zoo(repo_id: str, out: Path, revision: str | None = None,
                 include: list[str] | None = None) -> Path:
    """Download the zoo in ``repo_id`` into ``out`` (new or empty), verified against its manifest."""
    from huggingface_hub import snapshot_download

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} exists and is not empty; choose a new --out")
    patterns = None if not include else list(ALWAYS) + list(include)
    _quiet_unless_terminal()
    try:
        snapshot = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                          allow_patterns=patterns))
    except _hub_errors() as exc:
        raise _explain(exc) from None
    if not (snapshot / MANIFEST).is_file():
        raise ZooError(f"{repo_id}: no {MANIFEST} in the repository; is it a zoo?")
    with atomic_directory(out) as partial:
        _materialise(snapshot, partial)
        _verify(partial, repo_id, revision, include)
    return out


def _materialise(snapshot: Path, target: Path) -> None:
    """Hard-link (or copy) every file of a cache snapshot into ``target``."""
    for path in sorted(snapshot.rglob("*")):
        if path.is_dir():
            continue
        dest = target / path.relative_to(snapshot)
        dest.parent.mkdir(parents=True, exist_ok=True)
        blob = path.resolve()
        try:
            os.link(blob, dest)
        except OSError:
            shutil.copyfile(blob, dest)


def _verify(root: Path, repo_id: str, revision: str | None, include: list[str] | None) -> None:
    manifest = Manifest.read(root)
    listed = manifest.files()
    present = [item for item in listed if (root / item["file"]).is_file()]
    if len(present) < len(listed):
        if not include:
            missing = next(i["file"] for i in listed if i not in present)
            raise ZooError(f"{repo_id}: {missing} is listed in the manifest but not in the repo")
        manifest.keep_only(present, {"repo_id": repo_id, "revision": revision, "include": include})
        (root / "metadata.csv").unlink(missing_ok=True)  # describes models this copy lacks
        manifest.save(root)
    problems = validate_archive(root)  # checksums of every file (each hashed once), shapes, NaNs
    if problems:
        raise ZooError(f"{repo_id}: downloaded archive is invalid ({problems[0]}); the download "
                       f"was discarded")


# -- the dataset card ----------------------------------------------------------------------------
def dataset_card(root: Path) -> str:
    """README.md for the zoo's Hub repository: YAML header + what the zoo holds and how to read it."""
    with ArchiveReader(root) as zoo:
        manifest = zoo.manifest
        table = zoo.metadata
        n_states = len(zoo) * len(zoo.epochs)
        last = table[table["epoch"] == zoo.epochs[-1]]
        factors = {f: sorted({json.dumps(v) for v in table[f]}) for f in zoo.factor_names}
        dataset = manifest.dataset
        size = _size_category(len(zoo))
        header = ["---", f"pretty_name: {json.dumps(manifest.name)}", "tags:",
                  "- model-zoo", "- weight-space-learning", f"- {manifest.architecture}",
                  f"- {dataset}",
                  "size_categories:", f"- {size}", "configs:", "- config_name: default",
                  "  data_files: metadata.csv", "---", ""]
        metric = f"test_{zoo.primary_metric}"
        metric_name = "test accuracy" if metric == "test_acc" else f"`{metric}`"
        body = [
            f"# {manifest.name}", "",
            manifest.description or "A model zoo: a population of trained neural networks.", "",
            f"- **Models**: {len(zoo):,} x {len(zoo.epochs)} stored states (epochs {zoo.epochs}) = "
            f"{n_states:,} states",
            f"- **Architecture**: `{manifest.architecture}` "
            f"{json.dumps(manifest.architecture_kwargs)}, "
            f"{zoo.n_params:,} parameters per state",
            f"- **Data set**: `{dataset}`",
            f"- **Task**: {zoo.task}",
            f"- **Final {metric_name}**: mean {np.nanmean(last[metric]):.4f}, "
            f"min {np.nanmin(last[metric]):.4f}, max {np.nanmax(last[metric]):.4f}",
            "- **Factors** (what varies between models):" if factors else "- **Factors**: none",
        ]
        body += [f"  - `{f}`: {', '.join(v)}" for f, v in factors.items()]
        body += ["", "## Training", "", "```json", json.dumps(manifest.training, indent=1), "```", "",
                 "## Files", "",
                 "- `manifest.json`: the zoo's spec, model configs, tensor layout and shard "
                 "checksums;",
                 f"- `shards/*.h5`: weights float32 [models, states, {zoo.n_params}] and metrics "
                 "[models, states] per shard;",
                 "- `metadata.csv`: one row per model-state (factors, metrics, generalisation gap);",
                 "- `safetensors/` (when exported): one file per model, every state.", "",
                 "## Use", "", "```bash",
                 "zoo download REPO_ID --out zoo      # verified against the manifest's sha256",
                 "zoo info zoo", "hyperrep train zoo --out run", "```", "",
                 "```python", "from modelzoo import open_zoo",
                 "zoo = open_zoo('zoo')", "weights = zoo.weights()   # [models, states, params]",
                 "net = zoo.model(0, zoo.epochs[-1])", "```", "",
                 "The archive format is documented in the project's DATASET_CARD.md; files are "
                 "read with h5py / safetensors, nothing is unpickled.", ""]
    return "\n".join(header + body)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"
