"""``zoo import``: the published zoo layouts converted into our archive.

Formats (``../shared/REFERENCE.md``, "How the published zoos are stored"):

- ``modelzoos`` (Model Zoos, NeurIPS 2022): a Ray Tune experiment folder; per model a folder with
  ``params.json`` (config keys such as ``model::nlin``, ``optim::lr``, ``seed``), ``result.json``
  (one JSON line per epoch, line i = epoch i; train values of epoch 0 logged as -999) and
  ``checkpoint_<epoch>/checkpoints`` (a torch state_dict, read with ``weights_only=True``: a file
  that needs more is refused). The architecture is the registered one whose tensor shapes match the
  checkpoint's, tensor by tensor in order.
- ``unterthiner`` (Unterthiner et al. 2020, Small CNN Zoo): ``weights.npy`` [checkpoints, 4970] in
  TensorFlow order (conv kernels HWIO, dense kernels [in, out]), ``metrics.csv.gz`` (one row per
  checkpoint: ``config.*`` columns, ``step``, train/test accuracy and loss) and ``layout.csv`` (one
  row per variable, in the order of our layout: ``varname``, ``start_idx``, ``end_idx`` [start, end)
  of its columns). Consecutive rows with the same config and rising ``step`` are one model; stored
  "epochs" are the ``step`` values. The imported architecture pads like TensorFlow's 'same'.

Config keys become our factor names (``activation``, ``init``, ``dropout``, ``optimizer``, ``lr``,
``weight_decay``, ``seed``, ...). A model's ``config`` holds the values our training accepts; values
it does not (e.g. a Keras initialiser name) stay in the model's ``factors`` under our name and the
manifest's ``source.unmapped`` lists them. Metrics the source did not record are NaN and listed in
``unrecorded_metrics``.
"""

import gzip
import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from modelzoo.archive import (
    DEFAULT_SHARD_SIZE,
    METRICS,
    ArchiveWriter,
    Layout,
    Manifest,
    ModelRun,
    atomic_directory,
)
from modelzoo.data import DATASETS
from modelzoo.errors import ZooError
from modelzoo.models import create_model
from modelzoo.specs import TrainingConfig, parse_spec

FORMATS = ("modelzoos", "unterthiner")

MODELZOOS_KEYS = {"model::nlin": "activation", "model::init_type": "init",
                  "model::dropout": "dropout", "optim::optimizer": "optimizer", "optim::lr": "lr",
                  "optim::wd": "weight_decay", "optim::momentum": "momentum", "seed": "seed",
                  "training::batchsize": "batch_size"}
UNTERTHINER_KEYS = {"config.activation": "activation", "config.w_init": "init",
                    "config.dropout": "dropout", "config.optimizer": "optimizer",
                    "config.learning_rate": "lr", "config.l2reg": "weight_decay",
                    "config.train_fraction": "train_fraction", "config.init_std": "init_std",
                    "config.b_init": "b_init"}
UNTERTHINER_METRICS = {"train_accuracy": "train_acc", "test_accuracy": "test_acc",
                       "train_loss": "train_loss", "test_loss": "test_loss"}
# architectures a Model Zoos checkpoint is matched against, cheapest first
CANDIDATES = [("cnn_s", {"in_channels": 1}), ("cnn_s", {"in_channels": 3}),
              ("cnn_l", {"in_channels": 3}), ("tetris_mlp", {}),
              ("unterthiner_cnn", {"in_channels": 1}), ("resnet18", {"num_classes": 10}),
              ("resnet18", {"num_classes": 100}), ("resnet18", {"num_classes": 200})]
MISSING = -999.0


def import_zoo(path: Path, fmt: str, out: Path, dataset: str | None = None,
               name: str | None = None) -> Path:
    """Convert the published zoo at ``path`` into an archive at ``out`` (written under a hidden
    sibling and renamed at the end: an error leaves nothing behind)."""
    path, out = Path(path), Path(out)
    if fmt not in FORMATS:
        raise ZooError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if not path.is_dir():
        raise ZooError(f"{path} is not a folder")
    if out.exists() and any(out.iterdir()):  # checked before the (slow) reading, too
        raise ZooError(f"{out} exists and is not empty; choose a new --out")
    if dataset is not None and dataset not in DATASETS:
        raise ZooError(f"--dataset {dataset}: unknown; choose from {', '.join(sorted(DATASETS))}")
    reader = read_modelzoos if fmt == "modelzoos" else read_unterthiner
    zoo = reader(path)
    dataset = dataset or zoo.pop("dataset", None) or _dataset_from(path.name)
    zoo.pop("dataset", None)
    if dataset is None:
        raise ZooError(f"{path}: cannot tell the data set; pass --dataset")
    with atomic_directory(out) as partial:
        _write(partial, name or _slug(path.name), fmt, path, dataset, **zoo)
    return out


# -- Model Zoos (Ray Tune folders) ---------------------------------------------------------------
def read_modelzoos(root: Path) -> dict:
    folders = sorted(p.parent for p in root.glob("*/params.json"))
    if not folders:
        raise ZooError(f"{root}: no model folders with params.json (is this a Ray Tune experiment?)")
    models, states, metrics = [], [], []
    arch = None
    for folder in folders:
        params = _read_json(folder / "params.json")
        checkpoints = {int(m.group(1)): p / "checkpoints" for p in folder.glob("checkpoint_*")
                       if (m := re.fullmatch(r"checkpoint_(\d+)", p.name)) and
                       (p / "checkpoints").is_file()}
        if not checkpoints:
            raise ZooError(f"{folder}: no checkpoint_*/checkpoints files")
        tensors = {e: _checkpoint_tensors(p) for e, p in sorted(checkpoints.items())}
        if arch is None:
            arch = _match_architecture([t.shape for t in next(iter(tensors.values()))], folder)
        layout = arch[2]
        flat = {}
        for epoch, ts in tensors.items():
            if [tuple(t.shape) for t in ts] != [e.shape for e in layout.entries]:
                raise ZooError(f"{checkpoints[epoch]}: tensor shapes differ from the zoo's "
                               f"{arch[0]} ({len(ts)} tensors)")
            flat[epoch] = np.concatenate([t.reshape(-1).float().numpy() for t in ts])
        states.append(flat)
        metrics.append(_result_lines(folder / "result.json"))
        models.append({new: params[old] for old, new in MODELZOOS_KEYS.items() if old in params})
        models[-1]["epochs"] = params.get("training::epochs_train")
    epochs = sorted(set.intersection(*(set(s) for s in states)))
    dataset = _dataset_from(json.dumps(_read_json(folders[0] / "params.json")))
    return {"arch": arch[:2], "models": models, "epochs": epochs,
            "states": [np.stack([s[e] for e in epochs]) for s in states],
            "metrics": [{k: np.array([m.get(e, {}).get(k, np.nan) for e in epochs], np.float32)
                         for k in METRICS} for m in metrics],
            "dataset": dataset, "dropped_epochs": sorted(set().union(*states) - set(epochs))}


def _checkpoint_tensors(path: Path) -> list[torch.Tensor]:
    """The floating-point tensors of a torch state_dict file, in its order (no unpickling beyond
    what ``weights_only=True`` allows)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise ZooError(f"{path}: refused, the file needs more than weights-only loading allows "
                       f"({reason[:120]})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ZooError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") \
            from None
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZooError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return [v for v in state.values() if v.is_floating_point()]


def _match_architecture(shapes: list, where: Path) -> tuple[str, dict, Layout]:
    shapes = [tuple(s) for s in shapes]
    for name, kwargs in CANDIDATES:
        if name == "resnet18" and len(shapes) < 100:
            continue
        layout = Layout.of(create_model(name, **kwargs))
        if [e.shape for e in layout.entries] == shapes:
            return name, kwargs, layout
    raise ZooError(f"{where}: the checkpoint's {len(shapes)} tensors match no registered "
                   f"architecture (cnn_s, cnn_l, tetris_mlp, unterthiner_cnn, resnet18)")


def _result_lines(path: Path) -> dict[int, dict[str, float]]:
    """Metrics per epoch from result.json: line i is epoch i; -999 means not recorded."""
    if not path.is_file():
        raise ZooError(f"{path}: missing (the per-epoch metrics)")
    out = {}
    for i, line in enumerate(l for l in path.read_text().splitlines() if l.strip()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ZooError(f"{path}: line {i + 1} is not JSON") from None
        out[i] = {k: float(row[k]) if isinstance(row.get(k), (int, float)) and row[k] != MISSING
                  else np.nan for k in METRICS}
    return out


# -- Unterthiner et al. (weights.npy + metrics.csv.gz + layout.csv) ------------------------------
def read_unterthiner(root: Path) -> dict:
    for required in ("weights.npy", "metrics.csv.gz", "layout.csv"):
        if not (root / required).is_file():
            raise ZooError(f"{root}: {required} is missing")
    try:
        weights = np.load(root / "weights.npy", mmap_mode="r", allow_pickle=False)
        with gzip.open(root / "metrics.csv.gz", "rt") as f:
            table = pd.read_csv(f)
        variables = pd.read_csv(root / "layout.csv")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ZooError(f"{root}: unreadable ({str(exc).splitlines()[0]})") from None
    layout = Layout.of(create_model("unterthiner_cnn", in_channels=1))
    if weights.ndim != 2 or weights.shape[1] != layout.size or len(table) != len(weights):
        raise ZooError(f"{root}: weights.npy is {weights.shape}, expected [{len(table)} rows of "
                       f"metrics.csv.gz, {layout.size}]")
    missing = {"varname", "start_idx", "end_idx"} - set(variables.columns)
    if missing or len(variables) != len(layout.entries) or "step" not in table.columns:
        raise ZooError(f"{root}: layout.csv needs one row per variable ({len(layout.entries)}) "
                       f"with varname, start_idx, end_idx, and metrics.csv.gz a step column")
    config_cols = [c for c in table.columns if c.startswith("config.")]
    keys = table[config_cols].astype(str).agg("|".join, axis=1).to_numpy()
    steps = table["step"].to_numpy()
    starts = [0] + [i for i in range(1, len(table))
                    if keys[i] != keys[i - 1] or steps[i] <= steps[i - 1]]
    bounds = list(zip(starts, starts[1:] + [len(table)]))
    epochs = sorted(set.intersection(*(set(steps[a:b].tolist()) for a, b in bounds)))
    models, states, metrics = [], [], []
    for a, b in bounds:
        rows = [a + list(steps[a:b]).index(e) for e in epochs]
        states.append(np.stack([tf_to_torch(weights[r], variables, layout) for r in rows]))
        values = {k: np.full(len(epochs), np.nan, np.float32) for k in METRICS}
        for column, metric in UNTERTHINER_METRICS.items():
            if column in table.columns:
                values[metric] = table[column].to_numpy(np.float32)[rows]
        metrics.append(values)
        row = table.iloc[a]
        models.append({new: _plain(row[old]) for old, new in UNTERTHINER_KEYS.items()
                       if old in table.columns})
    return {"arch": ("unterthiner_cnn", {"in_channels": 1, "tf_padding": True}),
            "models": models, "epochs": [int(e) for e in epochs], "states": states,
            "metrics": metrics, "dropped_epochs": sorted(set(steps.tolist()) - set(epochs))}


def tf_to_torch(row: np.ndarray, variables: pd.DataFrame, layout: Layout) -> np.ndarray:
    """One TensorFlow-ordered weight row -> our flat vector: conv kernels HWIO -> OIHW, dense
    kernels [in, out] -> [out, in], biases unchanged; variables in layout.csv order."""
    parts = []
    for (_, var), entry in zip(variables.iterrows(), layout.entries):
        values = np.asarray(row[int(var["start_idx"]):int(var["end_idx"])], dtype=np.float32)
        if values.size != entry.size:
            raise ZooError(f"layout.csv: {var['varname']} has {values.size} values, "
                           f"{entry.name} needs {entry.size}")
        if len(entry.shape) == 4:
            o, i, h, w = entry.shape
            values = values.reshape(h, w, i, o).transpose(3, 2, 0, 1)
        elif len(entry.shape) == 2:
            values = values.reshape(entry.shape[::-1]).T
        parts.append(values.reshape(-1))
    return np.concatenate(parts)


# -- writing -------------------------------------------------------------------------------------
def _write(root: Path, name: str, fmt: str, source: Path, dataset: str, arch: tuple,
           models: list[dict], epochs: list[int], states: list[np.ndarray],
           metrics: list[dict], dropped_epochs: list) -> None:
    if not epochs:
        raise ZooError(f"{source}: the models share no stored epoch")
    layout = Layout.of(create_model(arch[0], **arch[1]))
    configs, unmapped = [], set()
    for values in models:
        config = {"epochs": max(epochs), "save_epochs": epochs}
        for key, value in values.items():
            if key in TrainingConfig.model_fields and value is not None:
                try:
                    TrainingConfig.model_validate({**config, key: value})
                    config[key] = value
                except ValidationError:
                    unmapped.add(key)
            elif value is not None and key != "epochs":
                unmapped.add(key)
        configs.append(TrainingConfig.model_validate(config))
    factor_names = [k for k in dict.fromkeys(k for m in models for k in m if k != "epochs")
                    if len({json.dumps(m.get(k)) for m in models}) > 1]
    spec_factors = {k: sorted({getattr(c, k) for c in configs}, key=str)
                    for k in factor_names if k not in unmapped}
    spec = parse_spec({"name": name, "description": f"imported from {fmt}: {source.name}",
                       "architecture": {"name": arch[0], **arch[1]}, "dataset": {"name": dataset},
                       "training": configs[0].model_dump(mode="json"), "factors": spec_factors},
                      f"imported spec of {source}")
    unrecorded = [k for k in METRICS if any(np.isnan(m[k]).any() for m in metrics)]
    digest = hashlib.sha256(np.ascontiguousarray(states[0]).tobytes()).hexdigest()
    writer = ArchiveWriter.create(root, Manifest.new(
        name=name, fingerprint=f"import:{fmt}:{len(models)}:{digest}",
        spec=spec.model_dump(mode="json"), architecture=arch[0], architecture_kwargs=arch[1],
        layout=layout, epochs=epochs, factors=factor_names,
        models=[(c.model_dump(mode="json"), {k: _plain(m.get(k)) for k in factor_names})
                for c, m in zip(configs, models)],
        shard_size=DEFAULT_SHARD_SIZE, unrecorded_metrics=unrecorded,
        source={"kind": "import", "format": fmt, "path": str(source),
                "unmapped": sorted(unmapped), "dropped_epochs": dropped_epochs}))
    writer.write_all([ModelRun(s.astype(np.float32), m) for s, m in zip(states, metrics)])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ZooError(f"{path}: not valid JSON") from None


def _dataset_from(text: str) -> str | None:
    text = text.lower()
    for name in sorted(DATASETS, key=len, reverse=True):
        if re.search(rf"(?<![a-z]){re.escape(name).replace('_', '[_-]?')}", text):
            return name
    return None


def _plain(value):
    """numpy scalars -> Python values (JSON-ready)."""
    return value.item() if isinstance(value, np.generic) else value


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return slug or "imported-zoo"
