"""The one training entry point: ``train_configs`` trains a list of model configs of a zoo spec,
choosing the loop (vectorised populations, one model at a time, or a remote-sensing task
objective); ``load_data`` loads the spec's data set."""

from pathlib import Path

import numpy as np

from modelzoo.archive import ModelRun
from modelzoo.data import DataSplits, TaskData, create_dataset
from modelzoo.errors import ZooError
from modelzoo.specs import TrainingConfig, ZooSpec
from modelzoo.train.alone import train_model
from modelzoo.train.population import can_vectorise, train_population_groups
from modelzoo.train.tasks import train_task_model


def load_data(spec: ZooSpec, data_root: str | Path | None = None) -> DataSplits | TaskData:
    """The spec's data set; ``data_root`` overrides ``dataset.root``."""
    options = spec.dataset.model_dump()
    name, root = options.pop("name"), options.pop("root")
    return create_dataset(name, root=data_root or root, **options)


def train_configs(spec: ZooSpec, configs: list[TrainingConfig], data: DataSplits | TaskData,
                  device: str = "cpu", population_size: int | None = None,
                  initial: np.ndarray | None = None,
                  masks: np.ndarray | None = None, first: int = 0) -> list[ModelRun]:
    """Train a list of configs: as vectorised populations, or one at a time if size is 1.

    ``initial``: optional flat starting states [len(configs), params] (fine-tuning);
    ``masks``: optional bool [len(configs), params], False = held at zero (pruned fine-tuning);
    ``first``: the zoo index of ``configs[0]`` (a task zoo's model i may start from model i of a
    pre-trained zoo).
    """
    arch, kwargs = spec.architecture.name, spec.architecture.kwargs()
    if spec.task.name != "classification":  # remote-sensing objectives: one model at a time
        if initial is not None or masks is not None:
            raise ZooError(f"task {spec.task.name!r} zoos cannot be fine-tuned from given states")
        return [train_task_model(arch, kwargs, c, data, spec.task, device, first + i)
                for i, c in enumerate(configs)]
    if population_size == 1 or not can_vectorise(arch, kwargs, configs):
        return [train_model(arch, kwargs, c, data, device,
                            None if initial is None else initial[i],
                            None if masks is None else masks[i])
                for i, c in enumerate(configs)]
    return train_population_groups(arch, kwargs, configs, data, device, population_size, initial,
                                   masks)
