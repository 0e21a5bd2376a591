"""``zoo import``: the published zoo layouts converted into our archive.

Formats (``../shared/REFERENCE.md``, "How the published zoos are stored"):

- ``modelzoos`` (Model Zoos, NeurIPS 2022): a Ray Tune experiment folder; per model a folder with
  ``params.json`` (config keys such as ``model::nlin``, ``optim::lr``, ``seed``), ``result.json``
  (one JSON line per epoch with its ``training_iteration``; train values of epoch 0 logged as -999)
  and ``checkpoint_<epoch>/checkpoints`` (a torch state_dict, read with ``weights_only=True``: a
  file that needs more is refused). A checkpoint's metrics are the line whose
  ``training_iteration`` is its epoch plus an offset, detected per zoo and stored as
  ``source.metrics_offset``: 0 where Ray counted the epoch-0 evaluation as iteration 0, 1 in older
  zoos (without ``training_iteration``: line i is epoch i, offset null). The architecture is the
  registered one whose tensor shapes match the checkpoint's, tensor by tensor in order.
- ``unterthiner`` (Unterthiner et al. 2020, Small CNN Zoo, as google-research's
  ``dnn_predict_accuracy`` publishes it): ``weights.npy`` [checkpoints, 4970] in TensorFlow order,
  ``metrics.csv.gz`` (one row per checkpoint, sorted by checkpoint path: ``config.*`` columns,
  ``modeldir``, ``step``, train/test accuracy and loss) and ``layout.csv`` (``varname``,
  ``start_idx``, ``end_idx``, ``shape`` per Keras variable; each layer's bias before its kernel;
  conv kernels HWIO, dense kernels [in, out]). A model is a ``modeldir``; its steps are sorted
  numerically and are the stored "epochs" (0, 1, 2, 3, 20, 40, 60, 80, 86 in the published zoo).
  An epoch a model lacks is stored as NaN for that model only and listed in the manifest's
  ``missing_states``; a state with non-finite weights (a diverged run) is kept as published and
  listed in ``nonfinite_states`` (the published loaders drop such runs: filter on that list to do
  the same). The architecture is ``unterthiner_cnn`` with 'valid' padding, as Keras trained it,
  and the data spec records the published inputs: pixels in [-1, 1], grayscale as the channel
  mean (``dataset.scale: symmetric``), whole 32x32 SVHN / CIFAR-10 images.

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

from modelzoo.archive import (DEFAULT_SHARD_SIZE, METRICS, ArchiveReader, ArchiveWriter, Layout,
                              Manifest, ModelRun, atomic_directory)
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
# the published ``config.dataset`` names (TFDS) -> ours, and the inputs the zoo was trained on:
# pixels scaled to [-1, 1], grayscale as the channel mean, full 32x32 SVHN / CIFAR-10 images
UNTERTHINER_DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10",
                        "svhn_cropped": "svhn"}
UNTERTHINER_INPUTS = {"mnist": {}, "fashion_mnist": {}, "cifar10": {"grayscale": True},
                      "svhn": {"grayscale": True, "center_crop": 32}}
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


def import_report(root: Path) -> list[str]:
    """What ``zoo import`` says about an imported archive: size, and what did not carry over."""
    with ArchiveReader(root) as zoo:
        manifest = zoo.manifest
        source = manifest.source or {}
        lines = [f"imported {len(zoo)} models x {len(zoo.epochs)} states ({manifest.architecture}, "
                 f"{zoo.n_params:,} parameters) into {root}"]
    if source.get("unmapped"):
        lines.append(f"kept as factors only (not valid training settings here): "
                     f"{', '.join(source['unmapped'])}")
    if source.get("dropped_epochs"):
        lines.append(f"epochs not stored for every model, left out: {source['dropped_epochs']}")
    if manifest.missing_states:
        lines.append(f"{len(manifest.missing_states)} states the source lacks, stored as NaN "
                     f"(manifest: missing_states)")
    if manifest.nonfinite_states:
        lines.append(f"{len(manifest.nonfinite_states)} states with non-finite weights, kept as "
                     f"published (manifest: nonfinite_states)")
    if source.get("metrics_offset") is not None:
        lines.append(f"metrics paired with checkpoints by training_iteration = epoch + "
                     f"{source['metrics_offset']}")
    return lines


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
    offset = _iteration_offset(metrics, states)
    epochs = sorted(set.intersection(*(set(s) for s in states)))
    dataset = _dataset_from(json.dumps(_read_json(folders[0] / "params.json")))
    return {"arch": arch[:2], "models": models, "epochs": epochs,
            "states": [np.stack([s[e] for e in epochs]) for s in states],
            "metrics": [{k: np.array([by_epoch.get(e, {}).get(k, np.nan) for e in epochs],
                                     np.float32) for k in METRICS}
                        for by_epoch in (_lines_by_epoch(m, offset) for m in metrics)],
            "dataset": dataset, "dropped_epochs": sorted(set().union(*states) - set(epochs)),
            "metrics_offset": offset}


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


def _result_lines(path: Path) -> list[dict]:
    """The lines of result.json: metrics (-999 = not recorded -> NaN) and ``training_iteration``."""
    if not path.is_file():
        raise ZooError(f"{path}: missing (the per-epoch metrics)")
    out = []
    for i, line in enumerate(l for l in path.read_text().splitlines() if l.strip()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ZooError(f"{path}: line {i + 1} is not JSON") from None
        values = {k: float(row[k]) if isinstance(row.get(k), (int, float)) and row[k] != MISSING
                  else np.nan for k in METRICS}
        iteration = row.get("training_iteration")
        out.append(values | {"line": i, "iteration": iteration if isinstance(iteration, int)
                             else None})
    return out


def _iteration_offset(lines: list[list[dict]], states: list[dict]) -> int | None:
    """How a checkpoint's epoch relates to the ``training_iteration`` of its result line: 0 where
    Ray counts the epoch-0 evaluation as iteration 0 (these zoos' trainables), 1 in older zoos
    (iteration = epoch + 1); the offset pairing more checkpoints wins. None: the lines carry no
    ``training_iteration``; then line i is epoch i."""
    if not any(line["iteration"] is not None for model in lines for line in model):
        return None
    matches = {offset: sum(epoch + offset in {line["iteration"] for line in model}
                           for model, state in zip(lines, states) for epoch in state)
               for offset in (0, 1)}
    return max(matches, key=lambda offset: (matches[offset], -offset))


def _lines_by_epoch(lines: list[dict], offset: int | None) -> dict[int, dict]:
    """Each checkpoint epoch's result line: the first whose ``training_iteration`` is the epoch
    plus ``offset`` (None: line i is epoch i)."""
    if offset is None:
        return {line["line"]: line for line in lines}
    return {line["iteration"] - offset: line for line in reversed(lines)
            if line["iteration"] is not None}


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
    if "step" not in table.columns:
        raise ZooError(f"{root}: metrics.csv.gz has no step column")
    placement = variable_placement(variables, layout, root / "layout.csv")
    steps = pd.to_numeric(table["step"], errors="coerce").to_numpy()
    if np.isnan(steps).any():
        raise ZooError(f"{root}: metrics.csv.gz has a step that is not a number")
    steps = steps.astype(np.int64)
    groups = model_rows(table, steps)
    epochs = sorted(set(steps.tolist()))
    columns = {metric: table[column].to_numpy(np.float32)  # read once, not cell by cell
               for column, metric in UNTERTHINER_METRICS.items() if column in table.columns}
    models, states, metrics, missing, nonfinite = [], [], [], [], []
    for m, rows in enumerate(groups):
        by_step = {int(steps[r]): r for r in rows}
        if len(by_step) != len(rows):
            raise ZooError(f"{root}: model {m} ({_model_name(table, rows[0])}) has two rows of "
                           f"one step")
        state = np.full((len(epochs), layout.size), np.nan, np.float32)
        values = {k: np.full(len(epochs), np.nan, np.float32) for k in METRICS}
        for e, epoch in enumerate(epochs):
            if epoch not in by_step:
                missing.append([m, epoch])
                continue
            r = by_step[epoch]
            state[e] = tf_to_torch(np.asarray(weights[r]), placement, layout)
            if not np.isfinite(state[e]).all():
                nonfinite.append([m, epoch])
            for metric, column in columns.items():
                values[metric][e] = column[r]
        states.append(state)
        metrics.append(values)
        first = table.iloc[rows[0]]
        models.append({new: _plain(first[old]) for old, new in UNTERTHINER_KEYS.items()
                       if old in table.columns})
    dataset = None
    if "config.dataset" in table.columns:
        dataset = UNTERTHINER_DATASETS.get(str(table["config.dataset"].iloc[0]))
    return {"arch": ("unterthiner_cnn", {"in_channels": 1, "padding": "valid"}),
            "models": models, "epochs": [int(e) for e in epochs], "states": states,
            "metrics": metrics, "dropped_epochs": [], "dataset": dataset,
            "missing_states": missing, "nonfinite_states": nonfinite}


def model_rows(table: pd.DataFrame, steps: np.ndarray) -> list[list[int]]:
    """Row indices of each model, models in order of first appearance. Models are told apart by
    ``modeldir`` (the published files; rows come sorted by checkpoint path, so a model's steps are
    0, 1, 2, 20, 3, 40, ...), else by the checkpoint path in the first column
    (``<modeldir>/permanent_ckpt-N``), else by config columns and a step that does not rise."""
    if "modeldir" in table.columns:
        keys = table["modeldir"].astype(str).to_numpy()
    elif table.columns[0].startswith("Unnamed") and \
            table.iloc[:, 0].astype(str).str.contains("/").all():
        keys = table.iloc[:, 0].astype(str).str.rsplit("/", n=1).str[0].to_numpy()
    else:
        config = table[[c for c in table.columns if c.startswith("config.")]].astype(str)
        keys = config.agg("|".join, axis=1).to_numpy() if len(config.columns) else \
            np.array([""] * len(table))
        run, model = [], 0
        for i in range(len(table)):
            if i and (keys[i] != keys[i - 1] or steps[i] <= steps[i - 1]):
                model += 1
            run.append(str(model))
        keys = np.array(run)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _model_name(table: pd.DataFrame, row: int) -> str:
    return str(table["modeldir"].iloc[row]) if "modeldir" in table.columns else f"row {row}"


def variable_placement(variables: pd.DataFrame, layout: Layout,
                       where: Path) -> list[tuple[int, int, tuple[int, ...]]]:
    """For each entry of our layout: (start, end, TensorFlow shape) of its columns in a weights row.

    ``layout.csv`` names Keras variables (``sequential/conv2d/bias:0``, ``.../kernel:0``; the
    published file lists each layer's bias before its kernel) with ``start_idx``, ``end_idx`` and
    ``shape``. Layers are matched to ours in order of first appearance (conv1, conv2, conv3, fc),
    kernels to ``weight`` and biases to ``bias``; without a ``shape`` column the TensorFlow shape
    follows from ours (HWIO kernels, [in, out] dense kernels)."""
    needed = {"varname", "start_idx", "end_idx"}
    if not needed <= set(variables.columns) or len(variables) != len(layout.entries):
        raise ZooError(f"{where}: needs one row per variable ({len(layout.entries)}) with varname, "
                       f"start_idx, end_idx (and shape)")
    layers: list[str] = []
    found: dict[str, tuple[int, int, tuple[int, ...] | None]] = {}
    for _, var in variables.iterrows():
        parts = str(var["varname"]).split(":")[0].split("/")
        if len(parts) < 2 or parts[-1] not in ("kernel", "bias"):
            raise ZooError(f"{where}: variable {var['varname']!r} is not a layer's kernel or bias")
        if parts[-2] not in layers:
            layers.append(parts[-2])
        shape = None
        if "shape" in variables.columns and isinstance(var["shape"], str):
            shape = tuple(int(d) for d in re.findall(r"\d+", var["shape"]))
        found[f"{layers.index(parts[-2])}.{parts[-1]}"] = (int(var["start_idx"]),
                                                          int(var["end_idx"]), shape)
    ours = list(dict.fromkeys(e.name.rsplit(".", 1)[0] for e in layout.entries))
    placement = []
    for entry in layout.entries:
        module, kind = entry.name.rsplit(".", 1)
        key = f"{ours.index(module)}.{'kernel' if kind == 'weight' else 'bias'}"
        if key not in found:
            raise ZooError(f"{where}: no variable for {entry.name} (layers found: {layers})")
        start, end, shape = found[key]
        tf_shape = tf_shape_of(entry.shape)
        if end - start != entry.size or (shape is not None and shape != tf_shape):
            raise ZooError(f"{where}: {layers[int(key.split('.')[0])]}/{key.split('.')[1]} is "
                           f"{shape or end - start}, {entry.name} needs {tf_shape}")
        placement.append((start, end, tf_shape))
    return placement


def tf_shape_of(shape: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow's shape of one of our tensors: conv OIHW -> HWIO, dense [out, in] -> [in, out]."""
    if len(shape) == 4:
        o, i, h, w = shape
        return (h, w, i, o)
    return tuple(shape[::-1]) if len(shape) == 2 else tuple(shape)


def tf_to_torch(row: np.ndarray, placement: list[tuple[int, int, tuple[int, ...]]],
                layout: Layout) -> np.ndarray:
    """One TensorFlow-ordered weight row -> our flat vector (conv kernels HWIO -> OIHW, dense
    kernels [in, out] -> [out, in], biases unchanged), reading each tensor where ``placement``
    says it lies."""
    parts = []
    for (start, end, tf_shape), entry in zip(placement, layout.entries):
        values = np.asarray(row[start:end], dtype=np.float32).reshape(tf_shape)
        if len(entry.shape) == 4:
            values = values.transpose(3, 2, 0, 1)
        elif len(entry.shape) == 2:
            values = values.T
        parts.append(values.reshape(-1))
    return np.concatenate(parts)


# -- writing -------------------------------------------------------------------------------------
def _write(root: Path, name: str, fmt: str, source: Path, dataset: str, arch: tuple,
           models: list[dict], epochs: list[int], states: list[np.ndarray],
           metrics: list[dict], dropped_epochs: list, missing_states: list | None = None,
           nonfinite_states: list | None = None, metrics_offset: int | None = None) -> None:
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
    data = {"name": dataset}
    if fmt == "unterthiner":
        data |= {"scale": "symmetric", **UNTERTHINER_INPUTS.get(dataset, {"grayscale": True})}
    spec = parse_spec({"name": name, "description": f"imported from {fmt}: {source.name}",
                       "architecture": {"name": arch[0], **arch[1]}, "dataset": data,
                       "training": configs[0].model_dump(mode="json"), "factors": spec_factors},
                      f"imported spec of {source}")
    gaps = {(m, e) for m, e in (missing_states or [])}
    unrecorded = [k for k in METRICS if any(
        np.isnan(v[k][i]) for n, v in enumerate(metrics) for i, e in enumerate(epochs)
        if (n, e) not in gaps)]
    digest = hashlib.sha256(np.ascontiguousarray(states[0]).tobytes()).hexdigest()
    writer = ArchiveWriter.create(root, Manifest.new(
        name=name, fingerprint=f"import:{fmt}:{len(models)}:{digest}",
        spec=spec.model_dump(mode="json"), architecture=arch[0], architecture_kwargs=arch[1],
        layout=layout, epochs=epochs, factors=factor_names,
        models=[(c.model_dump(mode="json"), {k: _plain(m.get(k)) for k in factor_names})
                for c, m in zip(configs, models)],
        shard_size=DEFAULT_SHARD_SIZE, unrecorded_metrics=unrecorded,
        source={"kind": "import", "format": fmt, "path": str(source),
                "unmapped": sorted(unmapped), "dropped_epochs": dropped_epochs}
        | ({} if metrics_offset is None else {"metrics_offset": metrics_offset}),
        missing_states=missing_states or None, nonfinite_states=nonfinite_states or None))
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
