"""One model at a time: ``train_model`` trains one config and records its stored epochs.

On a CPU each step is the reference loop (``modelzoo.train.single.train_epoch``: torch.nn and
torch.optim). On a GPU the same step (batches, keys, augmentation, autocast, masks) is replayed as
one CUDA graph (``modelzoo.train.graphed.GraphedTrainer``): eagerly, a ResNet-18 step is bound by
the host's kernel launches (BENCHMARKS.md). Its update replays torch.optim's single-tensor
arithmetic in ``PopulationOptimizer``, the population's optimiser, so a model trained alone on a
GPU and in a GPU population also share their update's rounding. Adam with a learning-rate schedule
(which the graph cannot replay) trains eagerly on a GPU too.
"""

import numpy as np
import torch

from modelzoo.archive import Layout, ModelRun
from modelzoo.data import DataSplits
from modelzoo.specs import TrainingConfig
from modelzoo.train.graphed import GraphedTrainer
from modelzoo.train.record import RunRecorder
from modelzoo.train.single import (
    apply_mask,
    autocast,
    build_model,
    epoch_batches,
    evaluate,
    exact_float32,
    make_optimizer,
    make_scheduler,
    mixed_precision,
    seed_roots,
    train_epoch,
    train_subset,
)


def graphed_training(config: TrainingConfig, device: torch.device) -> bool:
    """True when ``train_model`` replays this config's steps as a CUDA graph on ``device``."""
    return device.type == "cuda" and GraphedTrainer.supports(config)


def train_model(arch: str, arch_kwargs: dict, config: TrainingConfig, data: DataSplits,
                device: str | torch.device = "cpu", initial: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> ModelRun:
    """Train one model and return its stored states and metrics.

    ``initial``: a flat state [params] to start from instead of the seeded initialisation
    (fine-tuning); the seed still keys the data order and dropout masks. ``mask``: bool [params],
    False = held at zero before training and after every step (pruned fine-tuning).
    """
    device = torch.device(device)
    model = build_model(arch, arch_kwargs, config)
    layout = Layout.of(model)
    if initial is not None:
        layout.load_into(model, initial)
    model = model.to(device)
    mixed = mixed_precision(model, device)
    if mixed:
        model = model.to(memory_format=torch.channels_last)
    keep = None
    if mask is not None:
        keep = {n: t.to(device) for n, t in
                layout.unflatten(np.asarray(mask, dtype=np.float32)).items()}
        apply_mask(model, keep)
    splits = data.on(device)
    x, y = splits["train"].x, splits["train"].y
    subset = train_subset(config, len(data.train)).to(device)
    steps = len(subset) // config.batch_size
    root = seed_roots([config.seed], device)
    stored = config.stored_epochs()
    recorder = RunRecorder()

    def record():
        with autocast(mixed):
            results = {name: evaluate(model, split) for name, split in splits.items()}
        recorder.add_splits(layout.flatten(model.state_dict()), results)

    with exact_float32():  # also while a graph is captured: its kernels keep TF32 off
        if graphed_training(config, device):
            trainer = GraphedTrainer(model, config, x, y, root, steps, keep, mixed)
            run_epoch = trainer.train_epoch
        else:
            optimizer = make_optimizer(model, config)
            scheduler = make_scheduler(optimizer, config, steps)

            def run_epoch(batches, first_step):
                train_epoch(model, optimizer, scheduler, config, batches, x, y, root, first_step,
                            keep, mixed)

        if 0 in stored:
            record()
        for epoch in range(1, config.epochs + 1):
            run_epoch(epoch_batches(config, subset, epoch), (epoch - 1) * steps)
            if epoch in stored:
                record()
    return recorder.run()
