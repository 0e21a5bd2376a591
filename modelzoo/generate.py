"""``zoo generate``: spec -> model configs -> trained states -> archive, written shard by shard."""

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from modelzoo.archive import (DEFAULT_SHARD_SIZE, ArchiveWriter, Layout, Manifest, ModelRun,
                              writing)
from modelzoo.data import DataSplits
from modelzoo.errors import ZooError
from modelzoo.specs import TrainingConfig, ZooSpec
from modelzoo.train import build_model, load_data, train_configs
from modelzoo.train.grouped import conv_kernels
from modelzoo.train.stream import (plans_across_shards, population_sizes, train_across_shards,
                                   trains_populations)


def spec_layout(spec: ZooSpec) -> Layout:
    return Layout.of(build_model(spec.architecture.name, spec.architecture.kwargs(),
                                 spec.configs()[0]))


def zoo_manifest(spec: ZooSpec, shard_size: int) -> Manifest:
    """The manifest of a new archive of ``spec``'s zoo."""
    factors = spec.factor_values()
    return Manifest.new(
        name=spec.name, fingerprint=spec.fingerprint(), spec=spec.model_dump(mode="json"),
        architecture=spec.architecture.name, architecture_kwargs=spec.architecture.kwargs(),
        layout=spec_layout(spec), epochs=spec.training.stored_epochs(), factors=list(factors),
        models=[(c.model_dump(mode="json"), {k: getattr(c, k) for k in factors})
                for c in spec.configs()],
        shard_size=shard_size, metrics=spec.task.metric_names(), task=spec.task.name,
        primary_metric=spec.task.primary_metric)


def train_shards(spec: ZooSpec, configs: list[TrainingConfig], pending: list[tuple[int, int]],
                 data: DataSplits, device: str, population_size: int | None
                 ) -> Iterator[tuple[int, int, list[ModelRun]]]:
    """Yield (start, stop, runs) for every pending shard; shards stay the unit of writing and
    resuming, populations take their models across shard boundaries: on a CPU as
    ``train_across_shards`` fills them; on a GPU consecutive shards train together up to the
    population's size. Models that do not train as populations train shard by shard."""
    if plans_across_shards(spec, population_size, device):
        yield from train_across_shards(spec, configs, pending, data, device, population_size)
        return
    span = 0  # most models of consecutive shards one training call takes (0: one shard)
    if device.startswith("cuda") and trains_populations(spec, population_size):
        span = population_sizes(spec, population_size, data.input_shape, device)(configs[0])
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
             ray_cpus: int | None = None, task_threads: int | None = None) -> Path:
    """Generate (or finish) the zoo of ``spec`` into the archive directory ``out``.

    ``on_shard(done_models, total_models)`` is called after each written shard. Completed shards
    of an earlier, interrupted run are kept and skipped. ``backend="ray"`` trains as Ray tasks
    (``address`` joins a cluster; ``ray_cpus`` caps a locally started instance; ``task_threads``:
    threads per task, see ``backends.run_ray``).
    """
    out = Path(out)
    conv_kernels(torch.device(device))  # a bad MODELZOO_CONV_KERNELS: one error line, no archive
    data = load_data(spec, data_root)
    if spec.task.pretrained and not (Path(spec.task.pretrained) / "manifest.json").is_file():
        raise ZooError(f"task.pretrained: {spec.task.pretrained} is not a zoo archive")
    with writing(out):
        writer = ArchiveWriter.open(out, zoo_manifest(spec, shard_size or DEFAULT_SHARD_SIZE))
        configs = spec.configs()
        total = writer.n_models
        done = total - sum(stop - start for start, stop in writer.pending())
        if on_shard:
            on_shard(done, total)
        if backend == "ray":
            from modelzoo.backends import run_ray

            shards = run_ray(spec, writer, data, device, population_size, address, ray_cpus,
                             task_threads)
        else:
            shards = train_shards(spec, configs, writer.pending(), data, device, population_size)
        for start, stop, runs in shards:
            writer.write_shard(start, stop, runs)
            done += stop - start
            if on_shard:
                on_shard(done, total)
        writer.finalize()
    return out
