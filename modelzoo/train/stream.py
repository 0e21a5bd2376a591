"""Training a zoo's shards in full populations.

A population is padded to ``POPULATION_MULTIPLE`` models with copies. Trained shard by shard,
every shard's share of each group (``group_key``) was padded (what that cost the shipped specs:
BENCHMARKS.md). Instead, ``plan_populations`` queues each group's models across shards until
they fill a population, so only each group's last population is padded; ``train_across_shards``
trains that plan in one process, and the Ray backend runs each of its populations as a task.
``ShardCollector`` turns trained populations back into shards, the unit of writing and resuming.
On the CPU a model's weights do not depend on its population, so the results are those of
training shard by shard, bit for bit (tested).
"""

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from modelzoo.archive import ModelRun
from modelzoo.data import DataSplits
from modelzoo.specs import TrainingConfig, ZooSpec
from modelzoo.train.cores import side_by_side
from modelzoo.train.dispatch import train_configs
from modelzoo.train.population import auto_population_size, can_vectorise, group_key

# what ``prepare(start, stop)`` returns for a shard read for fine-tuning: its models' starting
# states [models, params] and masks [models, params] (None: no masks)
ShardStates = tuple[np.ndarray, np.ndarray | None]
Shard = tuple[int, int, list[ModelRun]]  # (start, stop, the runs of models start..stop-1)


class Population(NamedTuple):
    """One population of a plan: the zoo indices of its models (ascending), and how many of the
    pending shards must be read before it can train (its last model's shard is the last)."""

    models: list[int]
    shards_read: int


def trains_populations(spec: ZooSpec, population_size: int | None) -> bool:
    """True when the zoo's models train as populations (classification, every config fits)."""
    return (spec.task.name == "classification" and population_size != 1
            and can_vectorise(spec.architecture.name, spec.architecture.kwargs(), spec.configs()))


def plans_across_shards(spec: ZooSpec, population_size: int | None, device: str) -> bool:
    """True when the zoo's models train in ``plan_populations``' populations on ``device``: a
    zoo that trains as populations, on a CPU, where a model's weights do not depend on its
    population (on a GPU they do, within rounding; it keeps consecutive shards together)."""
    return not device.startswith("cuda") and trains_populations(spec, population_size)


def population_sizes(spec: ZooSpec, population_size: int | None, input_shape: tuple[int, ...],
                     device: str) -> Callable[[TrainingConfig], int]:
    """How many models a population of ``config``'s group holds: ``population_size``, or the
    group's automatic size on ``device``."""
    arch, kwargs = spec.architecture.name, spec.architecture.kwargs()
    return lambda config: population_size or auto_population_size(
        arch, kwargs, config, input_shape, torch.device(device))


def plan_populations(configs: Sequence[TrainingConfig], pending: list[tuple[int, int]],
                     size_of: Callable[[TrainingConfig], int]) -> list[Population]:
    """The populations that train the models of the ``pending`` shards, in training order.

    ``configs[i]``: model i's config. Shards are read in order and each model joins the queue of
    its ``group_key``; a queue gives a population as soon as it holds ``size_of(config)`` models
    (asked once per group), the rest waiting for later shards; after the last shard every queue
    empties into populations of at most that size.
    """
    sizes: dict[tuple, int] = {}
    queues: dict[tuple, list[int]] = defaultdict(list)
    plan: list[Population] = []
    for read, (start, stop) in enumerate(pending, 1):
        for i in range(start, stop):
            key = group_key(configs[i])
            if key not in sizes:
                sizes[key] = max(1, size_of(configs[i]))
            queues[key].append(i)
        for key, queue in queues.items():
            while len(queue) >= sizes[key] or (read == len(pending) and queue):
                plan.append(Population(queue[:sizes[key]], read))
                del queue[:sizes[key]]
    return plan


class ShardCollector:
    """Gathers the runs of trained models until shards are whole."""

    def __init__(self, pending: list[tuple[int, int]]):
        self.waiting = list(pending)  # shards not yet whole
        self.runs: dict[int, ModelRun] = {}  # by zoo index, until their shard is whole

    def add(self, models: list[int], runs: list[ModelRun]) -> list[Shard]:
        """Take the runs of ``models``; return the shards (start, stop, runs) now whole."""
        self.runs.update(zip(models, runs))
        whole = [s for s in self.waiting if all(i in self.runs for i in range(*s))]
        for shard in whole:
            self.waiting.remove(shard)
        return [(start, stop, [self.runs.pop(i) for i in range(start, stop)])
                for start, stop in whole]


def train_across_shards(spec: ZooSpec, configs: Sequence[TrainingConfig],
                        pending: list[tuple[int, int]], data: DataSplits, device: str,
                        population_size: int | None,
                        prepare: Callable[[int, int], ShardStates] | None = None
                        ) -> Iterator[Shard]:
    """Yield (start, stop, runs) for every shard of ``pending``, its models (``configs[i]``:
    model i's) trained in the populations ``plan_populations`` plans (a classification zoo whose
    models train as populations).

    ``prepare(start, stop)``: the shard's starting states and masks (pruned fine-tuning), asked
    once per shard, in order, when a population first needs it. On a CPU populations train side
    by side (``modelzoo.train.cores``). A shard is yielded when all its models are trained (not
    necessarily in order), so a kill loses at most the shards of models still queued or in
    training: under one population per group, plus those training beside it.
    """
    plan = plan_populations(configs, pending,
                            population_sizes(spec, population_size, data.input_shape, device))

    def jobs() -> Iterator[Callable[[], tuple[list[int], list[ModelRun]]]]:
        """The plan's populations to train, in order, each shard ``prepare``d when first needed."""
        # each model's (starting state, mask) of the shards read, until it trains
        states: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        read = 0
        for models, shards_read in plan:
            for start, stop in pending[read:shards_read] if prepare else ():
                initial, masks = prepare(start, stop)
                states.update((i, (initial[j], None if masks is None else masks[j]))
                              for j, i in enumerate(range(start, stop)))
            read = shards_read  # the plan's populations need shards in order
            initial = masks = None
            if prepare:
                work = [states.pop(i) for i in models]
                initial = np.stack([w[0] for w in work])
                masks = None if work[0][1] is None else np.stack([w[1] for w in work])
            yield partial(train_population_of, models, initial, masks)

    def train_population_of(models: list[int], initial: np.ndarray | None,
                            masks: np.ndarray | None) -> tuple[list[int], list[ModelRun]]:
        return models, train_configs(spec, [configs[i] for i in models], data, device,
                                     population_size, initial, masks)

    collector = ShardCollector(pending)
    for models, runs in side_by_side(jobs(), len(plan), torch.device(device)):
        yield from collector.add(models, runs)
