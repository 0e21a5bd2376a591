"""Training a zoo's shards in full populations: ``train_across_shards``.

A population is padded to ``POPULATION_MULTIPLE`` models with copies. Trained shard by shard,
every shard's share of each group (``group_key``) was padded (what that cost the shipped specs:
BENCHMARKS.md). Here each group's models queue across shards until they fill a population, so
only each group's last population is padded. On the CPU a model's weights do not depend on its
population, so the results are those of training shard by shard, bit for bit (tested).
"""

from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch

from modelzoo.archive import ModelRun
from modelzoo.data import DataSplits
from modelzoo.specs import TrainingConfig, ZooSpec
from modelzoo.train.dispatch import train_configs
from modelzoo.train.population import auto_population_size, can_vectorise, group_key

# what ``prepare(start, stop)`` returns for a shard: its models' configs, and optionally their
# starting states [models, params] and masks [models, params] (pruned fine-tuning)
ShardWork = tuple[list[TrainingConfig], np.ndarray | None, np.ndarray | None]


def trains_populations(spec: ZooSpec, population_size: int | None) -> bool:
    """True when the zoo's models train as populations (classification, every config fits)."""
    return (spec.task.name == "classification" and population_size != 1
            and can_vectorise(spec.architecture.name, spec.architecture.kwargs(), spec.configs()))


def train_across_shards(spec: ZooSpec, pending: list[tuple[int, int]],
                        prepare: Callable[[int, int], ShardWork], data: DataSplits, device: str,
                        population_size: int | None
                        ) -> Iterator[tuple[int, int, list[ModelRun]]]:
    """Yield (start, stop, runs) for every shard of ``pending``, its models trained in full
    populations (a classification zoo whose models train as populations).

    Shards are read in order (``prepare`` is called once per shard, when it is read) and each
    model joins the queue of its ``group_key``; a queue trains as soon as it holds a whole
    population (``population_size``, or the group's automatic size), the rest waiting for later
    shards, and after the last shard every queue trains. A shard is yielded when all its models
    are trained (not necessarily in order), so a kill loses at most the shards of queued models.
    """
    arch, kwargs = spec.architecture.name, spec.architecture.kwargs()
    sizes: dict[tuple, int] = {}
    queues: dict[tuple, list[int]] = defaultdict(list)
    queued: dict[int, tuple] = {}  # model -> (config, initial state or None, mask or None)
    runs: dict[int, ModelRun] = {}
    waiting: list[tuple[int, int]] = []  # shards read, not yet yielded
    for n, (start, stop) in enumerate(pending):
        configs, initial, masks = prepare(start, stop)
        waiting.append((start, stop))
        for j, (i, config) in enumerate(zip(range(start, stop), configs)):
            queued[i] = (config, None if initial is None else initial[j],
                         None if masks is None else masks[j])
            queues[group_key(config)].append(i)
        for key, queue in queues.items():
            if key not in sizes:
                sizes[key] = population_size or auto_population_size(
                    arch, kwargs, queued[queue[0]][0], data.input_shape, torch.device(device))
            ready = len(queue) if n == len(pending) - 1 else len(queue) - len(queue) % sizes[key]
            if ready:
                chosen, queue[:] = queue[:ready], queue[ready:]
                work = [queued.pop(i) for i in chosen]
                stacked = [None if work[0][k] is None else np.stack([w[k] for w in work])
                           for k in (1, 2)]
                runs.update(zip(chosen, train_configs(spec, [w[0] for w in work], data, device,
                                                      sizes[key], *stacked)))
        for shard in [s for s in waiting if all(i in runs for i in range(*s))]:
            waiting.remove(shard)
            yield shard[0], shard[1], [runs.pop(i) for i in range(*shard)]
