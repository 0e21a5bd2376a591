"""The archive's manifest (``manifest.json``), typed, and the crash-safe file helpers every writer uses.

``Manifest`` is the only code that knows the manifest's keys: every feature reads and writes the
manifest through its properties and methods. Its JSON keeps the key order it was created with, so
the same zoo gives a byte-identical manifest. Keys (DATASET_CARD.md documents each):

- ``format``, ``format_version``: ``modelzoo-archive``, 1;
- ``metrics``: metric names recorded per state; ``unrecorded_metrics``: those an imported zoo lacks
  (NaN there means "not recorded");
- ``name``, ``fingerprint`` (what makes a rerun resume instead of clash), ``spec`` (the zoo spec as
  JSON), ``architecture`` (``name``, ``kwargs``), ``n_params``, ``layout`` (``Layout.to_json``),
  ``epochs`` (stored epochs), ``factors`` (factor names), ``models`` (``index``, ``config``,
  ``factors`` per model), ``shard_size``, ``task``, ``primary_metric``;
- ``shards``: completed shards (``file``, ``models`` [start, stop), ``sha256``, ``bytes``);
- ``twins``: sparsified twin sets by name (``modelzoo.archive.twins``); ``exports``: safetensors
  files (``file``, ``sha256``); ``source``: where an imported or sampled zoo came from;
  ``missing_states`` / ``nonfinite_states``: [model, epoch] pairs of an imported zoo whose source
  lacks the state / holds non-finite weights;
  ``partial_download``: what a ``zoo download --include`` left out; ``complete``.
"""

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelzoo.archive.layout import Layout
from modelzoo.errors import ArchiveCorrupt, ZooError, validation_error_line

FORMAT = "modelzoo-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial"  # scratch folder inside an archive for shards being written
LOCK = ".lock"  # held (flock) by the one process writing an archive
DEFAULT_SHARD_SIZE = 100  # models per shard file
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


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


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Build a new folder ``out`` all at once: yields a hidden sibling ``.<name>.partial`` to write
    into, renamed to ``out`` when the block ends; an error (or interrupt) removes it, leaving
    nothing behind. ``out`` must not exist or be empty."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} exists and is not empty; choose a new --out")
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    os.replace(partial, out)


@contextlib.contextmanager
def writing(root: str | Path) -> Iterator[None]:
    """Hold the archive's write lock for the block: a second writer (``zoo generate``,
    ``zoo sparsify``, ``zoo export``) into the same folder gets one error line. The lock is an
    ``flock`` on ``root/.lock``, which the operating system releases when its process dies, so the
    run after a killed one takes it over; the file is removed when the block ends."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ZooError(f"{root} is being written by another process (zoo generate, sparsify or "
                       f"export); wait for it to finish or choose another folder") from None
    try:
        yield
    finally:
        (root / LOCK).unlink(missing_ok=True)
        os.close(fd)


def shard_ranges(n_models: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) model ranges of the shards of a zoo."""
    return [(s, min(s + shard_size, n_models)) for s in range(0, n_models, shard_size)]


def shard_name(start: int, shard_size: int) -> str:
    return f"shard-{start // shard_size:05d}.h5"


# -- what a manifest must hold (checked on every read; extra keys are kept as they are) ----------
class _Entries(BaseModel):
    model_config = ConfigDict(extra="allow")


class _File(_Entries):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Shard(_File):
    models: tuple[int, int]
    bytes: int = Field(ge=0)


class _LayoutEntry(_Entries):
    name: str
    shape: list[int]
    offset: int = Field(ge=0)
    size: int = Field(ge=0)
    kind: Literal["param", "buffer"]


class _Model(_Entries):
    index: int
    config: dict[str, Any]
    factors: dict[str, Any]


class _Architecture(_Entries):
    name: str
    kwargs: dict[str, Any]


class _Dataset(_Entries):
    name: str


class _Spec(_Entries):
    """What the archive itself reads of the stored spec (``modelzoo.specs`` validates the rest)."""

    dataset: _Dataset
    training: dict[str, Any]
    description: str = ""


class _Twins(_Entries):
    name: str
    finetune_epochs: int = Field(ge=0)
    from_epoch: int
    shards: list[_Shard]
    complete: bool


class _Schema(_Entries):
    format: Literal["modelzoo-archive"]
    format_version: int
    metrics: list[str]
    name: str
    fingerprint: str
    spec: _Spec
    architecture: _Architecture
    n_params: int = Field(ge=0)
    layout: list[_LayoutEntry]
    epochs: list[int] = Field(min_length=1)
    factors: list[str]
    models: list[_Model]
    shard_size: int = Field(gt=0)
    shards: list[_Shard]
    complete: bool
    twins: dict[str, _Twins] = {}
    exports: list[_File] = []
    missing_states: list[tuple[int, int]] = []
    nonfinite_states: list[tuple[int, int]] = []


def safe_path(root: Path, file: str) -> bool:
    """Whether a path listed in the manifest stays inside the archive: relative, POSIX, no ``..``,
    and not leading out through a symlink."""
    pure = PurePosixPath(file)
    if not file or "\\" in file or pure.is_absolute() or ".." in pure.parts or file.startswith("~"):
        return False
    base = Path(root).resolve()
    return (base / pure).resolve().is_relative_to(base)


def check_manifest(data: dict, root: Path, where: str) -> None:
    """Raise ``ArchiveCorrupt`` (one line naming the key) unless ``data`` is a sound manifest:
    the schema above, a layout that tiles ``n_params``, shard ranges inside the model list, model
    indices in order, and every listed file inside the archive."""
    try:
        schema = _Schema.model_validate(data)
    except ValidationError as exc:
        raise ArchiveCorrupt(validation_error_line(exc, where)) from None
    offset = 0
    for i, entry in enumerate(schema.layout):
        if entry.offset != offset or entry.size != math.prod(entry.shape):
            raise ArchiveCorrupt(f"{where}: layout.{i} ({entry.name}) does not follow on from the "
                                 f"entries before it")
        offset += entry.size
    if offset != schema.n_params:
        raise ArchiveCorrupt(f"{where}: layout holds {offset} values, n_params says "
                             f"{schema.n_params}")
    if [m.index for m in schema.models] != list(range(len(schema.models))):
        raise ArchiveCorrupt(f"{where}: models: indices must run 0, 1, 2, ...")
    for model in schema.models:
        lacking = [f for f in schema.factors if f not in model.factors]
        if lacking:
            raise ArchiveCorrupt(f"{where}: models.{model.index}.factors: no value for factor "
                                 f"{lacking[0]!r}")
    shards = [("shards", s) for s in schema.shards] + \
        [(f"twins.{name}", s) for name, t in schema.twins.items() for s in t.shards]
    previous: dict[str, int] = {}
    for key, shard in shards:
        start, stop = shard.models
        if not 0 <= start < stop <= len(schema.models):
            raise ArchiveCorrupt(f"{where}: {key}: {shard.file} lists models [{start}, {stop}) "
                                 f"outside the {len(schema.models)} models")
        if start < previous.get(key, 0):
            raise ArchiveCorrupt(f"{where}: {key}: {shard.file} overlaps the shard before it")
        previous[key] = stop
    for key, item in shards + [("exports", e) for e in schema.exports]:
        if not safe_path(root, item.file):
            raise ArchiveCorrupt(f"{where}: {key}: {item.file!r} leads outside the archive")


class Manifest:
    """An archive's manifest. ``data`` is the JSON object; use the properties, not its keys."""

    def __init__(self, data: dict):
        self.data = data

    @classmethod
    def new(cls, *, name: str, fingerprint: str, spec: dict, architecture: str,
            architecture_kwargs: dict, layout: Layout, epochs: list[int], factors: list[str],
            models: list[tuple[dict, dict]], shard_size: int = DEFAULT_SHARD_SIZE,
            metrics: list[str] | tuple[str, ...] = METRICS, task: str | None = None,
            primary_metric: str | None = None, unrecorded_metrics: list[str] | None = None,
            source: dict | None = None, missing_states: list[list[int]] | None = None,
            nonfinite_states: list[list[int]] | None = None) -> "Manifest":
        """The manifest of a new, empty archive. ``models``: (config, factor values) per model, as
        JSON; ``task`` / ``primary_metric`` are stored when given (generated zoos), ``source`` for
        imported and sampled zoos."""
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "metrics": list(metrics),
                "name": name, "fingerprint": fingerprint, "spec": spec,
                "architecture": {"name": architecture, "kwargs": architecture_kwargs},
                "n_params": layout.size, "layout": layout.to_json(), "epochs": list(epochs),
                "factors": list(factors),
                "models": [{"index": i, "config": config, "factors": values}
                           for i, (config, values) in enumerate(models)],
                "shard_size": shard_size}
        if task is not None:
            data |= {"task": task, "primary_metric": primary_metric}
        if unrecorded_metrics is not None:
            data["unrecorded_metrics"] = list(unrecorded_metrics)
        if source is not None:
            data["source"] = source
        if missing_states:
            data["missing_states"] = missing_states
        if nonfinite_states:
            data["nonfinite_states"] = nonfinite_states
        return cls(data | {"shards": [], "complete": False})

    @classmethod
    def read(cls, root: str | Path) -> "Manifest":
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise ZooError(f"{root} is not a zoo archive: {MANIFEST} is missing")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArchiveCorrupt(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ArchiveCorrupt(f"{path}: not a {FORMAT} manifest")
        version = data.get("format_version", 0)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ZooError(f"{path}: format version {version} is newer than this software reads "
                           f"({FORMAT_VERSION}); upgrade modelzoo")
        check_manifest(data, Path(root), str(path))
        return cls(data)

    def save(self, root: str | Path) -> None:
        """Replace ``root/manifest.json`` atomically."""
        text = json.dumps(self.data, indent=1) + "\n"
        write_atomic(Path(root) / MANIFEST, text.encode())

    # -- the zoo ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def spec(self) -> dict:
        """The zoo spec as JSON (``modelzoo.specs.parse_spec`` validates it)."""
        return self.data["spec"]

    @property
    def architecture(self) -> str:
        return self.data["architecture"]["name"]

    @property
    def architecture_kwargs(self) -> dict:
        return dict(self.data["architecture"]["kwargs"])

    @property
    def dataset(self) -> str:
        return self.data["spec"]["dataset"]["name"]

    @property
    def description(self) -> str:
        return self.data["spec"].get("description") or ""

    @property
    def training(self) -> dict:
        """The spec's base training settings as JSON."""
        return self.data["spec"]["training"]

    @property
    def n_params(self) -> int:
        return self.data["n_params"]

    @property
    def layout(self) -> Layout:
        return Layout.from_json(self.data["layout"])

    @property
    def epochs(self) -> list[int]:
        """The stored epochs (0 = before training)."""
        return list(self.data["epochs"])

    @property
    def factors(self) -> list[str]:
        return list(self.data["factors"])

    @property
    def n_models(self) -> int:
        """Models planned (``models`` lists every model, written or not)."""
        return len(self.data["models"])

    def model_config(self, model: int) -> dict:
        """A model's training config as JSON (``TrainingConfig.model_validate`` reads it)."""
        return self.data["models"][model]["config"]

    def model_factors(self, model: int) -> dict:
        return self.data["models"][model]["factors"]

    @property
    def shard_size(self) -> int:
        return self.data["shard_size"]

    @property
    def task(self) -> str:
        """The training objective ('classification' or a remote-sensing task)."""
        return self.data.get("task", "classification")

    @property
    def primary_metric(self) -> str:
        """The per-split metric playing test accuracy's role: test_<primary> ('acc', 'r2', ...)."""
        return self.data.get("primary_metric", "acc")

    @property
    def metrics(self) -> list[str]:
        return list(self.data["metrics"])

    @property
    def unrecorded_metrics(self) -> set[str]:
        return set(self.data.get("unrecorded_metrics", []))

    @property
    def missing_states(self) -> set[tuple[int, int]]:
        """(model, epoch) states an imported zoo's source lacks: weights and metrics are NaN."""
        return {(m, e) for m, e in self.data.get("missing_states", [])}

    @property
    def nonfinite_states(self) -> set[tuple[int, int]]:
        """(model, epoch) states whose source weights are NaN / inf (a diverged run), kept as is."""
        return {(m, e) for m, e in self.data.get("nonfinite_states", [])}

    @property
    def source(self) -> dict | None:
        return self.data.get("source")

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    def mark_complete(self) -> None:
        self.data["complete"] = True

    # -- files --------------------------------------------------------------------------------
    @property
    def shards(self) -> list[dict]:
        """Completed shards in model order: ``file``, ``models`` [start, stop), ``sha256``, ``bytes``."""
        return self.data["shards"]

    def pending(self) -> list[tuple[int, int]]:
        """Shard ranges not yet written."""
        done = {tuple(s["models"]) for s in self.shards}
        return [r for r in shard_ranges(self.n_models, self.shard_size) if r not in done]

    @property
    def twins(self) -> dict[str, dict]:
        """Twin sets by name: settings, ``shards`` and ``complete`` (``modelzoo.archive.twins``)."""
        return self.data.get("twins", {})

    def twin_entry(self, name: str, settings: dict) -> dict:
        """The twin set ``name``, created (empty) if absent; refuses one with other settings."""
        twins = self.data.setdefault("twins", {})
        entry = twins.get(name)
        if entry is not None and {k: entry[k] for k in settings} != settings:
            raise ZooError(f"twins {name} exist with other settings "
                           f"({ {k: entry[k] for k in settings} }); remove them from the manifest first")
        if entry is None:
            entry = twins[name] = {"name": name, **settings, "shards": [], "complete": False}
        return entry

    def complete_twins(self, name: str) -> None:
        self.data["twins"][name]["complete"] = True

    @property
    def exports(self) -> list[dict]:
        """Exported safetensors files: ``file``, ``sha256``."""
        return self.data.get("exports", [])

    def set_exports(self, exports: list[dict]) -> None:
        self.data["exports"] = exports

    def files(self) -> list[dict]:
        """Every checksummed file the manifest lists: shards, exports, twin shards."""
        return self.shards + self.exports + [s for t in self.twins.values() for s in t["shards"]]

    def keep_only(self, present: list[dict], note: dict) -> None:
        """Forget the listed files not in ``present`` (a partial copy); ``note`` says why."""
        self.data["shards"] = [s for s in self.shards if s in present]
        self.data["exports"] = [e for e in self.exports if e in present]
        for twin in self.twins.values():
            twin["shards"] = [s for s in twin["shards"] if s in present]
        self.data["complete"] = False
        self.data["partial_download"] = note


def add_shard_entry(shards: list[dict], file: str, start: int, stop: int, sha256: str,
                    size: int) -> None:
    """Record a written shard in a shard list (the zoo's or a twin set's), kept in model order."""
    shards.append({"file": file, "models": [start, stop], "sha256": sha256, "bytes": size})
    shards.sort(key=lambda s: s["models"][0])
