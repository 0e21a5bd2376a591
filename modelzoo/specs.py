"""Zoo specs: a YAML file describing one zoo, validated with pydantic, expanded into model configs.

A spec names an architecture, a data set, the base training settings, and ``factors``: lists whose
cross product gives the models. Any ``TrainingConfig`` field can be a factor; ``{range: [a, b]}``
means ``a..b-1`` and ``{random: N}`` draws N seeds (as in the Hyp-rand zoos) from a fixed generator.
"""

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelzoo.data import DATASETS
from modelzoo.errors import ZooError, validation_error_line
from modelzoo.models import ACTIVATIONS, INIT_METHODS, MODELS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArchitectureSpec(BaseModel):
    """``name`` of a registered architecture plus its constructor arguments (in_channels, ...)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown architecture {value!r}; choose from {sorted(MODELS)}")
        return value

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DatasetSpec(Strict):
    """A registered data set and its preprocessing (None = the data set's published default)."""

    name: str
    root: str | None = None
    grayscale: bool | None = None
    center_crop: int | None = Field(default=None, gt=0)
    resize: int | None = Field(default=None, gt=0)
    val_size: float | int | None = None
    split_seed: int = 42
    options: dict[str, Any] = {}  # reader arguments of task data sets (sample count, patch size)
    # "standardize": per-channel mean / std of the train split; "symmetric": pixels mapped to
    # [-1, 1] and grayscale as the channel mean, as the Small CNN Zoo was trained. Left out of
    # the spec's JSON at its default, so archives and fingerprints of earlier zoos are unchanged.
    scale: Literal["standardize", "symmetric"] = Field(
        default="standardize", exclude_if=lambda value: value == "standardize")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DATASETS:
            raise ValueError(f"unknown dataset {value!r}; choose from {sorted(DATASETS)}")
        return value


class TrainingConfig(Strict):
    """Everything that defines how one model is trained; each field can be a factor."""

    seed: int = 0
    epochs: int = Field(default=50, ge=0)
    batch_size: int = Field(default=10, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=3e-4, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    activation: str = "tanh"
    init: str = "uniform"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    bias_init: float = 0.01
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    schedule: Literal["constant", "onecycle"] = "constant"
    augment: list[Literal["crop", "flip"]] = []
    save_epochs: list[int] | None = None
    temperature: float = Field(default=0.07, gt=0)  # contrastive task: NT-Xent temperature
    task_weighting: Literal["dynamic", "fixed"] = "dynamic"  # multitask task

    @field_validator("activation")
    @classmethod
    def _activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; choose from {sorted(ACTIVATIONS)}")
        return value

    @field_validator("init")
    @classmethod
    def _init(cls, value: str) -> str:
        if value not in INIT_METHODS:
            raise ValueError(f"unknown init {value!r}; choose from {sorted(INIT_METHODS)}")
        return value

    @model_validator(mode="after")
    def _epochs(self):
        if self.save_epochs is not None:
            bad = [e for e in self.save_epochs if not 0 <= e <= self.epochs]
            if bad:
                raise ValueError(f"save_epochs {bad} outside 0..{self.epochs}")
        return self

    def stored_epochs(self) -> list[int]:
        """The epochs whose states are stored: ``save_epochs`` or 0..epochs."""
        if self.save_epochs is None:
            return list(range(self.epochs + 1))
        return sorted(set(self.save_epochs))


SPLITS = ("train", "val", "test")
MULTITASKS = ("segmentation", "generation", "fuel")


class TaskSpec(Strict):
    """The training objective of a zoo (``classification`` = the image-classification zoos);
    see ``modelzoo.train.tasks`` for what each one trains and records."""

    name: Literal["classification", "contrastive", "supervised", "multitask",
                  "heteroscedastic"] = "classification"
    label: Literal["single", "multi", "segmentation"] = "single"
    pretrained: str | None = None
    freeze: bool = False
    kpi_iou: float = Field(default=0.5, gt=0, le=1)
    kpi_mae: float = Field(default=0.1, gt=0)
    ema_alpha: float = Field(default=0.1, gt=0, le=1)
    focal_gamma: float = Field(default=2.0, ge=0)
    fixed_weights: dict[str, float] = {t: 1.0 for t in MULTITASKS}
    mc_passes: int = Field(default=20, ge=1)
    keep_quantile: float = Field(default=0.8, gt=0, le=1)

    def metric_names(self) -> list[str]:
        per_split = {"classification": ["loss", "acc"], "contrastive": ["loss", "probe_acc"],
                     "supervised": ["loss", "acc"] + (["miou"] if self.label == "segmentation"
                                                      else []),
                     "multitask": ["loss", "iou", "mae", "acc"],
                     "heteroscedastic": ["loss", "r2", "mae", "mse", "r2_filtered",
                                         "mae_filtered", "mse_filtered", "std"]}[self.name]
        names = [f"{s}_{m}" for s in SPLITS for m in per_split]
        if self.name == "multitask":
            names += [f"weight_{t}" for t in MULTITASKS]
        return names

    @property
    def primary_metric(self) -> str:
        """The per-split metric that plays test accuracy's role (probes, gap, zoo info)."""
        return {"contrastive": "probe_acc", "heteroscedastic": "r2"}.get(self.name, "acc")


LATER_SETTINGS = {"task": TaskSpec().model_dump(mode="json"), "dataset.options": {},
                  "training.temperature": 0.07, "training.task_weighting": "dynamic"}


MAX_MODELS = 10_000_000  # models per zoo (the published zoos hold up to 30,000 per data set)


class RangeFactor(Strict):
    range: tuple[int, int]

    @field_validator("range")
    @classmethod
    def _not_empty(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] >= value[1]:
            raise ValueError(f"range {list(value)} holds no value (it is start..stop-1)")
        return value


class RandomFactor(Strict):
    random: int = Field(gt=0)
    seed: int = 0


FactorValues = list[Any] | RangeFactor | RandomFactor


class ZooSpec(Strict):
    """One zoo: architecture x dataset x base training config x factors (cross product)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    architecture: ArchitectureSpec
    dataset: DatasetSpec
    training: TrainingConfig = TrainingConfig()
    task: TaskSpec = TaskSpec()
    factors: dict[str, FactorValues] = {}

    @field_validator("factors")
    @classmethod
    def _factor_names(cls, factors: dict) -> dict:
        for key, values in factors.items():
            if key not in TrainingConfig.model_fields:
                raise ValueError(f"unknown factor {key!r}; factors are training fields: "
                                 f"{sorted(TrainingConfig.model_fields)}")
            if key in ("epochs", "save_epochs"):
                raise ValueError(f"factor {key!r} cannot vary: every model stores the same epochs")
            if isinstance(values, list) and not values:
                raise ValueError(f"factor {key!r} has no values")
        return factors

    @model_validator(mode="after")
    def _configs_valid(self):
        sizes = [v.range[1] - v.range[0] if isinstance(v, RangeFactor) else
                 v.random if isinstance(v, RandomFactor) else len(v) for v in self.factors.values()]
        total = 1
        for size in sizes:
            total *= size
        if total > MAX_MODELS:
            raise ValueError(f"the factors make {total:,} models; at most {MAX_MODELS:,} per zoo")
        self.factor_values()  # raises on a bad factor value
        task_data = DATASETS[self.dataset.name].task_data
        if task_data and self.task.name == "classification":
            raise ValueError(f"dataset {self.dataset.name!r} is a task data set: set task.name "
                             f"(contrastive, supervised, multitask or heteroscedastic)")
        if not task_data and self.task.name != "classification":
            raise ValueError(f"task {self.task.name!r} needs a task data set (synthetic_sen12ms, "
                             f"sen12ms, dfc2020, synthetic_plants, power_plants, synthetic_no2, "
                             f"no2), not {self.dataset.name!r}")
        if (self.task.pretrained or self.task.freeze) and self.task.name != "supervised":
            raise ValueError("task.pretrained and task.freeze belong to task supervised")
        if self.dataset.options and not task_data:
            raise ValueError("dataset.options: only task data sets take options")
        return self

    def factor_values(self) -> dict[str, list]:
        """Each factor's list of values, in spec order."""
        out: dict[str, list] = {}
        for key, values in self.factors.items():
            if isinstance(values, RangeFactor):
                values = list(range(*values.range))
            elif isinstance(values, RandomFactor):
                rng = np.random.default_rng(values.seed)
                values = [int(s) for s in rng.choice(2**31 - 1, size=values.random, replace=False)]
            for value in values:
                try:
                    TrainingConfig.model_validate({**self.training.model_dump(), key: value})
                except ValidationError as exc:
                    raise ValueError(f"factor {key!r} value {value!r}: "
                                     f"{exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
            out[key] = list(values)
        return out

    def configs(self) -> list[TrainingConfig]:
        """One training config per model: the cross product of the factors, first factor slowest."""
        values = self.factor_values()
        base = self.training.model_dump()
        return [TrainingConfig.model_validate({**base, **dict(zip(values, combo))})
                for combo in itertools.product(*values.values())]

    def fingerprint(self) -> str:
        """sha256 of the spec's canonical JSON (without the data root): identifies the zoo.

        Settings added after the first archives (task, temperature, task_weighting, dataset
        options) count only when they differ from their defaults, so older zoos keep theirs.
        """
        data = self.model_dump(mode="json")
        data["dataset"].pop("root", None)
        for key, default in LATER_SETTINGS.items():
            section, _, name = key.rpartition(".")
            holder = data[section] if section else data
            if holder.get(name) == default:
                holder.pop(name)
        # key order matters: the order of the factors defines the order of the models
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def parse_spec(data: Any, source: str = "spec") -> ZooSpec:
    """Validate a spec dict; any problem is one ``ZooError`` line naming the key."""
    if not isinstance(data, dict):
        raise ZooError(f"{source}: a zoo spec must be a mapping of keys, got {type(data).__name__}")
    try:
        return ZooSpec.model_validate(data)
    except ValidationError as exc:
        raise ZooError(validation_error_line(exc, source)) from None


def validated(model: type[BaseModel], data: dict, source: str):
    """``model.model_validate(data)``; any problem is one ``ZooError`` line naming the key (every
    config of the project is a pydantic model read through here or ``parse_spec``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ZooError(validation_error_line(exc, source)) from None


def load_spec(path: str | Path) -> ZooSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ZooError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_spec(data, str(path))
