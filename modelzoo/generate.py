"""``zoo generate``: spec -> model configs -> trained states -> archive, shard by shard."""

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from modelzoo.archive import ArchiveWriter
from modelzoo.data import DataSplits, create_dataset
from modelzoo.errors import ZooError
from modelzoo.layout import Layout
from modelzoo.population import auto_population_size, can_vectorise, train_population_groups
from modelzoo.specs import TrainingConfig, ZooSpec
from modelzoo.training import ModelRun, build_model, train_model

DEFAULT_SHARD_SIZE = 100


def load_data(spec: ZooSpec, data_root: str | Path | None = None) -> DataSplits:
    """The spec's data set; ``data_root`` overrides ``dataset.root``."""
    options = spec.dataset.model_dump()
    name, root = options.pop("name"), options.pop("root")
    return create_dataset(name, root=data_root or root, **options)


def spec_layout(spec: ZooSpec) -> Layout:
    return Layout.of(build_model(spec.architecture.name, spec.architecture.kwargs(),
                                 spec.configs()[0]))


def train_configs(spec: ZooSpec, configs: list[TrainingConfig], data: DataSplits,
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
        from modelzoo.remote_sensing.tasks import train_task_model

        return [train_task_model(arch, kwargs, c, data, spec.task, device, first + i)
                for i, c in enumerate(configs)]
    if population_size == 1 or not can_vectorise(arch, kwargs, configs):
        return [train_model(arch, kwargs, c, data, device,
                            None if initial is None else initial[i],
                            None if masks is None else masks[i])
                for i, c in enumerate(configs)]
    return train_population_groups(arch, kwargs, configs, data, device, population_size, initial,
                                   masks)


def population_span(spec: ZooSpec, data: DataSplits, device: str,
                    population_size: int | None) -> int:
    """How many models one training call should take: on a GPU the population's size (so a
    population spans shards), elsewhere one shard at a time (0)."""
    configs = spec.configs()
    arch, kwargs = spec.architecture.name, spec.architecture.kwargs()
    if (not device.startswith("cuda") or spec.task.name != "classification"
            or population_size == 1 or not can_vectorise(arch, kwargs, configs[:1])):
        return 0
    return population_size or auto_population_size(arch, kwargs, configs[0], data.input_shape,
                                                   torch.device(device))


def train_shards(spec: ZooSpec, configs: list[TrainingConfig], pending: list[tuple[int, int]],
                 data: DataSplits, device: str, population_size: int | None
                 ) -> Iterator[tuple[int, int, list[ModelRun]]]:
    """Yield (start, stop, runs) for every pending shard. Consecutive shards train together up to
    ``population_span`` models; shards stay the unit of writing and resuming."""
    span = population_span(spec, data, device, population_size)
    groups: list[list[tuple[int, int]]] = []
    for start, stop in pending:
        group = groups[-1] if groups else None
        if group and group[-1][1] == start and stop - group[0][0] <= span:
            group.append((start, stop))
        else:
            groups.append([(start, stop)])
    for group in groups:
        first, last = group[0][0], group[-1][1]
        runs = train_configs(spec, configs[first:last], data, device, population_size,
                             first=first)
        for start, stop in group:
            yield start, stop, runs[start - first:stop - first]


def generate(spec: ZooSpec, out: str | Path, data_root: str | Path | None = None,
             device: str = "cpu", population_size: int | None = None,
             shard_size: int | None = None,
             on_shard: Callable[[int, int], None] | None = None,
             backend: str = "local", address: str | None = None,
             ray_cpus: int | None = None) -> Path:
    """Generate (or finish) the zoo of ``spec`` into the archive directory ``out``.

    ``on_shard(done_models, total_models)`` is called after each written shard. Completed shards
    of an earlier, interrupted run are kept and skipped. ``backend="ray"`` runs shards as Ray tasks
    (``address`` joins a cluster; ``ray_cpus`` caps a locally started instance).
    """
    out = Path(out)
    data = load_data(spec, data_root)
    if spec.task.pretrained and not (Path(spec.task.pretrained) / "manifest.json").is_file():
        raise ZooError(f"task.pretrained: {spec.task.pretrained} is not a zoo archive")
    writer = ArchiveWriter.open(out, spec, spec_layout(spec), shard_size or DEFAULT_SHARD_SIZE)
    configs = spec.configs()
    total = writer.n_models
    done = total - sum(stop - start for start, stop in writer.pending())
    if on_shard:
        on_shard(done, total)
    if backend == "ray":
        from modelzoo.backends import run_ray

        shards = run_ray(spec, writer, data, device, population_size, address, ray_cpus)
    else:
        shards = train_shards(spec, configs, writer.pending(), data, device, population_size)
    for start, stop, runs in shards:
        writer.write_shard(start, stop, runs)
        done += stop - start
        if on_shard:
            on_shard(done, total)
    writer.finalize()
    return out


def resolve_device(device: str) -> str:
    """Validate a --device value ('cpu', 'cuda', 'cuda:N', 'auto')."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError(f"--device {device}: no CUDA device is available on this machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ZooError(f"--device {device}: use cpu, cuda, cuda:N or auto")
    return device
