"""One model's training step replayed as a CUDA graph: the one-at-a-time path without the host.

Eager, a ResNet-18 step on an H200 is bound by the host's kernel launches (BENCHMARKS.md: the GPU
is busy under a third of the time, and four models on four threads and streams train no faster
than one). ``GraphedTrainer`` trains what ``train_epoch`` trains (the same batches, keys,
augmentation and autocast, and torch.optim's update arithmetic to float rounding) with every
per-step input on the device:
- the batch indices, the step's key and its index into the schedule are copied into static
  tensors before each step;
- the learning rate and momentum of every step are tables, computed once by torch's own scheduler;
- the update is ``PopulationOptimizer``'s (one flat buffer, in place) for a population of one.
On a GPU the step is captured once and replayed; elsewhere it runs eagerly, which is how the tests
compare it with ``train_epoch``.
"""

import torch
import torch.nn.functional as F

from modelzoo.models import ZooModel
from modelzoo.specs import TrainingConfig
from modelzoo.train.population import PopulationOptimizer, capture_step
from modelzoo.train.single import (
    apply_mask,
    augment_batch,
    autocast,
    make_optimizer,
    make_scheduler,
    step_keys,
)


def schedule_tables(config: TrainingConfig, steps_per_epoch: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Learning rate and momentum of every step of the run (float64 [epochs * steps_per_epoch]),
    as ``make_optimizer`` and ``make_scheduler`` set them (Adam's momentum is its beta1)."""
    probe = torch.nn.Linear(1, 1)
    optimizer = make_optimizer(probe, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    group = optimizer.param_groups[0]
    lr, momentum = [], []
    for _ in range(config.epochs * steps_per_epoch):
        lr.append(group["lr"])
        momentum.append(group["momentum"] if "momentum" in group else group["betas"][0])
        if scheduler is not None:
            optimizer.step()  # no gradients: changes nothing, keeps the scheduler's order check
            scheduler.step()
    return (torch.tensor(lr, dtype=torch.float64, device=device),
            torch.tensor(momentum, dtype=torch.float64, device=device))


class GraphedTrainer:
    """Trains ``model`` (on the device of ``x``) one step per replay; ``train_epoch`` takes the
    place of ``modelzoo.train.single.train_epoch`` for this model and config.

    ``x`` [N, ...], ``y`` [N]: the training split on the device; ``root``: the model's root key
    int64 [1]; ``keep``: 0/1 masks by state name (pruned fine-tuning); ``mixed``: bf16 autocast and
    channels_last input; ``capture``: replay a CUDA graph (default: on a GPU). The model's
    parameters become views of the optimiser's flat buffer.
    """

    def __init__(self, model: ZooModel, config: TrainingConfig, x: torch.Tensor, y: torch.Tensor,
                 root: torch.Tensor, steps_per_epoch: int,
                 keep: dict[str, torch.Tensor] | None = None, mixed: bool = False,
                 capture: bool | None = None):
        if not self.supports(config):
            raise ValueError("graphed training takes Adam with a constant learning rate only "
                             "(a schedule would cycle its beta1)")
        device = x.device
        self.model, self.config, self.keep, self.mixed = model, config, keep, mixed
        self.x, self.y, self.root = x, y, root
        # conv weights stay channels_last under ``mixed``: the flat buffer holds them [O, H, W, C]
        self.nhwc = [mixed and p.dim() == 4 for p in model.parameters()]
        params = {name: (p.detach().permute(0, 2, 3, 1) if nhwc else p.detach()).unsqueeze(0)
                  for (name, p), nhwc in zip(model.named_parameters(), self.nhwc)}
        self.optimizer = PopulationOptimizer(params, [config])  # rebinds params to its buffer
        with torch.no_grad():
            for (name, p), nhwc in zip(model.named_parameters(), self.nhwc):
                p.data = params[name][0].permute(0, 3, 1, 2) if nhwc else params[name][0]
        self.leaves = list(model.parameters())
        self.lr, self.momentum = schedule_tables(config, steps_per_epoch, device)
        # what one step reads: overwritten in place before each step (the graph's static inputs)
        self.idx = torch.zeros(config.batch_size, dtype=torch.int64, device=device)
        self.key = torch.zeros((), dtype=torch.int64, device=device)
        self.at = torch.zeros(1, dtype=torch.int64, device=device)  # 1-d: indexing stays on device
        self.active = torch.ones(1, dtype=torch.bool, device=device)
        self.replay = self._step
        model.train()  # for the capture's warm-up; train_epoch sets it again
        if (device.type == "cuda" if capture is None else capture) and len(self.lr):
            state = self.optimizer.state() + list(model.buffers())
            self.replay = capture_step(self._step, state)

    @staticmethod
    def supports(config: TrainingConfig) -> bool:
        """False for Adam with a learning-rate schedule, which the tables cannot replay."""
        return config.optimizer != "adam" or config.schedule == "constant"

    def _step(self) -> None:
        xb, yb = self.x[self.idx], self.y[self.idx]
        if self.config.augment:
            xb = augment_batch(xb, self.key, self.config.augment)
        if self.mixed:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.mixed):
            loss = F.nll_loss(self.model(xb, dropout_key=self.key).float(), yb)
        grads = [g.permute(0, 2, 3, 1) if nhwc else g  # in the flat buffer's order
                 for g, nhwc in zip(torch.autograd.grad(loss, self.leaves), self.nhwc)]
        self.optimizer.set_hyperparameters(self.lr[self.at], self.momentum[self.at])
        self.optimizer.step(grads, self.active)
        if self.keep is not None:
            apply_mask(self.model, self.keep)

    def train_epoch(self, batches: torch.Tensor, first_step: int) -> None:
        """One epoch over ``batches`` (int64 [steps, batch] indices into x); step i is global step
        ``first_step + i`` (its key and its place in the schedule)."""
        if first_step + len(batches) > len(self.lr):
            raise ValueError(f"steps {first_step}..{first_step + len(batches) - 1} run past the "
                             f"schedule's {len(self.lr)} steps")
        self.model.train()
        at = torch.arange(first_step, first_step + len(batches), device=self.x.device)
        keys = step_keys(self.root, at)  # [steps]
        for i, idx in enumerate(batches):
            self.idx.copy_(idx, non_blocking=True)
            self.key.copy_(keys[i], non_blocking=True)
            self.at.copy_(at[i], non_blocking=True)
            self.replay()
