"""Vectorised population training: many models of one architecture trained as one computation.

Parameters of P models are stacked along a leading dimension [P, ...]. The small-zoo architectures
(``modelzoo.train.grouped.GROUPED_ARCHITECTURES``) run as one network of grouped convolutions and batched
matmuls; any other architecture runs under ``torch.func.vmap(grad(...))`` over ``functional_call``.
Each model keeps everything that makes it
itself: its seed (initial weights, training subset, data order and dropout masks, all keyed by the
seed as in ``modelzoo.train.single``), init method, learning rate, momentum, weight decay, dropout rate
and train fraction. The optimiser updates replay ``torch.optim.Adam`` / ``SGD`` (single-tensor path)
operation by operation with per-model hyperparameters, so a model trained in a population equals the
same config trained alone up to float rounding of the batched kernels.

Models are grouped by what one computation must share: activation, optimizer type, batch size and
epochs. Architectures with BatchNorm buffers, OneCycle schedules or augmentation train one at a time.
"""

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from modelzoo.archive import ModelRun
from modelzoo.archive.layout import Layout
from modelzoo.data import DataSplits, Split
from modelzoo.models import create_model
from modelzoo.specs import TrainingConfig
from modelzoo.train.cores import between_steps, side_by_side
from modelzoo.train.grouped import (
    GROUPED_ARCHITECTURES,
    grouped_network,
    shared_input_network,
    to_population_arrangement,
)
from modelzoo.train.record import RunRecorder
from modelzoo.train.single import (
    build_model,
    epoch_batches,
    exact_float32,
    model_kwargs,
    seed_roots,
    step_keys,
    train_subset,
)

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
# Bytes of activations a population may use per step on the CPU. Small on purpose: the step is
# bound by cache, not memory, so mid-sized populations train fastest (BENCHMARKS.md, populations).
CPU_MEMORY_BUDGET = 32 << 20
MAX_POPULATION = 4096
POPULATION_MULTIPLE = 16  # populations are padded to this many models (bit-identical results)
CPU_EVAL_ELEMENTS = 1 << 22
EVAL_PROBE_IMAGES = 16  # a GPU evaluation's chunks are sized from this many images' peak memory
GPU_EVAL_MEMORY_SHARE = 0.5
GPU_TENSOR_ELEMENTS = 2**31 - 1


def group_key(config: TrainingConfig) -> tuple:
    """What models must share to train in one computation."""
    return (config.activation, config.optimizer, config.batch_size, config.epochs,
            tuple(config.stored_epochs()))


def can_vectorise(arch: str, arch_kwargs: dict, configs: list[TrainingConfig]) -> bool:
    """True when these configs can train as populations (no BatchNorm, schedule, augmentation)."""
    if any(c.schedule != "constant" or c.augment for c in configs):
        return False
    probe = create_model(arch, **model_kwargs(arch_kwargs, configs[0]))
    return not any(True for _ in probe.buffers())


def activation_bytes(arch: str, arch_kwargs: dict, config: TrainingConfig,
                     input_shape: tuple[int, ...]) -> int:
    """Bytes of every module output for one sample (a proxy for training memory per sample)."""
    model = create_model(arch, **model_kwargs(arch_kwargs, config))
    with torch.no_grad():
        return 4 * max(activation_elements(model, torch.zeros(1, *input_shape)), 1)


def auto_population_size(arch: str, arch_kwargs: dict, config: TrainingConfig,
                         input_shape: tuple[int, ...], device: torch.device) -> int:
    """How many models fit: activations x batch x autograd overhead within the memory budget."""
    per_model = activation_bytes(arch, arch_kwargs, config, input_shape) * config.batch_size * 4
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 2
    else:
        budget = CPU_MEMORY_BUDGET
    size = int(max(1, min(MAX_POPULATION, budget // per_model)))
    return max(POPULATION_MULTIPLE, size - size % POPULATION_MULTIPLE)  # no padding when full


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-model states {name: tensor} stacked by name: {name: [P, ...]}, in the first's order."""
    return {name: torch.stack([state[name] for state in states]) for name in states[0]}


def train_population_groups(arch: str, arch_kwargs: dict, configs: list[TrainingConfig],
                            data: DataSplits, device: str = "cpu",
                            population_size: int | None = None,
                            initial: np.ndarray | None = None,
                            masks: np.ndarray | None = None) -> list[ModelRun]:
    """Train ``configs`` in populations of at most ``population_size``; runs in config order.
    On a CPU the populations train side by side (``modelzoo.train.cores``).

    ``initial``: optional flat starting states [len(configs), params] (fine-tuning);
    ``masks``: optional bool [len(configs), params], False = held at zero (pruned fine-tuning).
    """
    device = torch.device(device)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, config in enumerate(configs):
        groups[group_key(config)].append(i)
    chunks: list[list[int]] = []
    for members in groups.values():
        size = population_size or auto_population_size(arch, arch_kwargs, configs[members[0]],
                                                       data.input_shape, device)
        chunks += [members[start:start + size] for start in range(0, len(members), size)]

    def train_chunk(chunk: list[int]) -> tuple[list[int], list[ModelRun]]:
        return chunk, train_population(arch, arch_kwargs, [configs[i] for i in chunk], data, device,
                                       None if initial is None else initial[chunk],
                                       None if masks is None else masks[chunk])

    runs: list[ModelRun | None] = [None] * len(configs)
    for chunk, chunk_runs in side_by_side((partial(train_chunk, c) for c in chunks), len(chunks),
                                          device):
        for i, run in zip(chunk, chunk_runs):
            runs[i] = run
    return runs


class PopulationOptimizer:
    """Adam or SGD(momentum) over a population's parameters held in one flat buffer.

    ``params`` {name: [P, ...]} are rebound as views of one buffer ``flat`` [P, N], model-major:
    row i holds model i's N parameters, tensor after tensor in ``params`` order (the archive's flat
    state). So per-model lr, momentum, weight decay and step counts are [P, 1] columns that
    broadcast over a row, and one update is a dozen elementwise kernels over the whole population
    whatever its size. The element arithmetic replays ``torch.optim``'s single-tensor update
    order, so results match to float rounding. ``active`` [P] bool masks models that take no step
    (their state is left untouched). Every state update is in place, so a CUDA graph may capture a
    step.
    """

    def __init__(self, params: dict[str, torch.Tensor], configs: list[TrainingConfig]):
        device = next(iter(params.values())).device
        self.kind = configs[0].optimizer
        n_models = len(configs)
        self.flat = torch.cat([p.detach().reshape(n_models, -1) for p in params.values()], 1)
        offset = 0
        for name, p in params.items():
            size = p[0].numel()
            params[name] = self.flat[:, offset:offset + size].view(p.shape)
            offset += size
        column = lambda values: torch.tensor(values, dtype=torch.float64,  # noqa: E731
                                             device=device)[:, None]
        dtype = self.flat.dtype  # float32 in zoos (float64 in some tests)
        self.lr = column([c.lr for c in configs])
        self.wd = column([c.weight_decay for c in configs]).to(dtype)
        self.decays = any(c.weight_decay for c in configs)  # torch.optim skips a zero decay
        self.momentum = column([c.momentum for c in configs]).to(dtype)
        self.steps = torch.zeros(n_models, 1, dtype=torch.float64, device=device)
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat) if self.kind == "adam" else None

    @torch.no_grad()
    def set_hyperparameters(self, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        """Per-model learning rate and momentum [P] (device tensors) for the next steps: a
        schedule. In place, so a CUDA graph may capture it."""
        self.lr.copy_(lr[:, None])
        self.momentum.copy_(momentum[:, None])

    def state(self) -> list[torch.Tensor]:
        """Every tensor the optimiser updates (for snapshots around CUDA-graph warm-up)."""
        return [t for t in (self.flat, self.m, self.v, self.steps) if t is not None]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        """One update from ``grads`` (one [P, ...] per parameter tensor, in ``params`` order).

        Temporaries are updated in place where that keeps each operation's operands and order
        (so its rounding): the step is bound by memory traffic on a CPU, not arithmetic."""
        p = self.flat
        g = torch.cat([t.reshape(len(p), -1) for t in grads], 1)
        mask = active[:, None]
        self.steps.add_(mask.double())
        if self.decays:
            g += self.wd * p
        if self.kind == "adam":
            beta1, beta2 = ADAM_BETAS
            steps = self.steps.clamp_min(1)
            # Adam's bias corrections in float64, as torch.optim computes them in Python floats
            step_size = (-self.lr / (1 - beta1 ** steps)).to(p.dtype)
            bias2_sqrt = ((1 - beta2 ** steps) ** 0.5).to(p.dtype)
            m = torch.lerp(self.m, g, 1 - beta1)
            v = (self.v * beta2).addcmul_(g, g, value=1 - beta2)
            denom = v.sqrt().div_(bias2_sqrt).add_(ADAM_EPS)
            new_p = (step_size * m).div_(denom).add_(p)  # p + step_size * m / denom
            torch.where(mask, v, self.v, out=self.v)
        else:  # SGD: the momentum buffer starts as the first gradient
            m = torch.where(self.steps <= 1, g, self.m * self.momentum + g)
            new_p = ((-self.lr).to(p.dtype) * m).add_(p)  # p + (-lr) * m
        torch.where(mask, m, self.m, out=self.m)
        torch.where(mask, new_p, p, out=p)


@exact_float32()
def train_population(arch: str, arch_kwargs: dict, configs: list[TrainingConfig],
                     data: DataSplits, device: torch.device | str = "cpu",
                     initial: np.ndarray | None = None,
                     masks: np.ndarray | None = None) -> list[ModelRun]:
    """Train models that share ``group_key`` as one vectorised population.

    ``initial``: flat states [P, params] to start from instead of each seed's initialisation;
    ``masks``: bool [P, params]; masked-out values are zeroed before training and after every
    step (the effective weights of ``torch.nn.utils.prune``).

    The population is padded to a multiple of ``POPULATION_MULTIPLE`` models: oneDNN vectorises
    grouped convolutions across groups, so a model's rounding depended on its lane and on the
    population's size (4.5e-8 .. 1.6e-4 apart after 2 epochs for sizes 1-7); padded, a model's
    weights are bit-identical in every population size and composition on the CPU
    (tests/test_population.py). Each epoch's batch indices, dropout keys and active masks are
    prepared on the device at once; on a GPU the step (forward, backward, optimiser update,
    masks) is one captured CUDA graph replayed with no host synchronisation, while a host thread
    draws the next epoch's batches.
    """
    device = torch.device(device)
    keys = {group_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError(f"a population must share activation/optimizer/batch/epochs: {keys}")
    n_real = len(configs)
    pad = -n_real % POPULATION_MULTIPLE  # copies of the first model, trained and dropped
    configs = configs + [configs[0]] * pad
    if initial is not None:
        initial = np.concatenate([initial, np.repeat(initial[:1], pad, axis=0)])
    if masks is not None:
        masks = np.concatenate([masks, np.repeat(masks[:1], pad, axis=0)])
    first = configs[0]
    models = [build_model(arch, arch_kwargs, c) for c in configs[:n_real]]
    models += [models[0]] * pad
    layout = Layout.of(models[0])
    states = [m.state_dict() for m in models] if initial is None else \
        [layout.unflatten(row) for row in initial]
    params = {name: stacked.to(device) for name, stacked in stack_states(states).items()}
    template = models[0].to(device)
    keep = None
    if masks is not None:
        keep = _stacked_masks(layout, masks, device)
        _apply_masks(params, keep)
    optimizer = PopulationOptimizer(params, configs)  # rebinds params as views of its buffer
    splits = data.on(device)
    n_models = len(configs)
    dropout_p = torch.tensor([c.dropout for c in configs], dtype=torch.float32, device=device)
    roots = seed_roots([c.seed for c in configs], device)
    subsets = [train_subset(c, len(data.train)) for c in configs]
    steps_per_epoch = torch.tensor([len(s) // c.batch_size for s, c in zip(subsets, configs)])
    stored = first.stored_epochs()
    recorder = RunRecorder(n_models=n_models)

    train_step, forward_shared = population_forwards(arch, template, params, dropout_p)
    template.eval()
    eval_sample_elements = max(1, activation_elements(template, splits["test"].x[:1]))
    template.train()

    def record():
        recorder.add_splits(
            optimizer.flat.detach().to("cpu", copy=True).numpy(),  # rows: models' flat states
            {name: evaluate_population(forward_shared, n_models, split, eval_sample_elements)
             for name, split in splits.items()})

    x_train, y_train = splits["train"].x, splits["train"].y
    max_steps = int(steps_per_epoch.max())
    # what one step reads: overwritten in place before each step (a CUDA graph's static inputs)
    step_idx = torch.zeros(n_models, first.batch_size, dtype=torch.int64, device=device)
    step_key = torch.zeros(n_models, dtype=torch.int64, device=device)
    step_active = torch.zeros(n_models, dtype=torch.bool, device=device)

    def step():
        grads = train_step(x_train[step_idx], y_train[step_idx], step_key)
        optimizer.step(grads, step_active)
        if keep is not None:
            _apply_masks(params, keep)

    if device.type == "cuda" and max_steps > 0 and first.epochs > 0:
        step = capture_step(step, optimizer.state())

    if 0 in stored:
        record()
    counters = torch.arange(max_steps)[:, None]
    active = (counters < steps_per_epoch[None]).to(device)  # [S, P]: model i takes its first steps
    with batch_planner(device) as planner:
        def plan(epoch: int) -> Callable[[], torch.Tensor] | None:
            """The batches of ``epoch``, to be fetched (None past the last epoch)."""
            if epoch > first.epochs:
                return None
            if planner is None:
                return partial(epoch_batch_indices, configs, subsets, max_steps, epoch)
            return planner.submit(epoch_batch_indices, configs, subsets, max_steps, epoch).result

        upcoming = plan(1)
        for epoch in range(1, first.epochs + 1):
            batches = upcoming().to(device)  # [S, P, B]
            upcoming = plan(epoch + 1)
            keys = step_keys(roots[None], ((epoch - 1) * steps_per_epoch[None] + counters)
                             .to(device))  # [S, P], keyed by each model's global step
            for s in range(max_steps):
                step_idx.copy_(batches[s], non_blocking=True)
                step_key.copy_(keys[s], non_blocking=True)
                step_active.copy_(active[s], non_blocking=True)
                between_steps()
                step()
            if epoch in stored:
                record()
    return recorder.runs(n_real)


def batch_planner(device: torch.device) -> ThreadPoolExecutor | nullcontext:
    """Where a population draws each epoch's batches on the host (a keyed torch.randperm per
    model, about 1.5 ms each), as a context: on a GPU a thread, while the device trains the epoch
    before; on a CPU, whose cores all train, in line (it enters as None; a thread there made a
    32-model population 8 % slower)."""
    return ThreadPoolExecutor(1) if device.type == "cuda" else nullcontext()


def epoch_batch_indices(configs: list[TrainingConfig], subsets: list[torch.Tensor],
                        max_steps: int, epoch: int) -> torch.Tensor:
    """Each model's batches of one epoch, int64 [max_steps, P, B] on the host: model i's own
    ``epoch_batches``, then zeros (steps it does not take)."""
    batches = torch.zeros(max_steps, len(configs), configs[0].batch_size, dtype=torch.int64)
    for i, (config, subset) in enumerate(zip(configs, subsets)):
        own = epoch_batches(config, subset, epoch)
        batches[:len(own), i] = own
    return batches


def capture_step(step: Callable[[], None], state: list[torch.Tensor],
                 warmup: int = 2) -> Callable[[], None]:
    """``step`` captured as one CUDA graph; returns its replay.

    Warm-up runs (on a side stream, as capture requires) change the optimiser's ``state``; it is
    restored afterwards, so the first replay is the population's first step.
    """
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for t, s in zip(state, saved):
        t.copy_(s)
    return graph.replay


def _stacked_masks(layout: Layout, masks: np.ndarray, device) -> dict[str, torch.Tensor]:
    """bool [P, params] -> {tensor name: float mask [P, *shape]}."""
    flat = torch.from_numpy(np.asarray(masks, dtype=np.float32))
    return {e.name: flat[:, e.offset:e.offset + e.size].reshape(len(flat), *e.shape).to(device)
            for e in layout.entries}


@torch.no_grad()
def _apply_masks(params: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> None:
    for name, p in params.items():
        p.mul_(keep[name])


def population_forwards(arch: str, template: torch.nn.Module, params: dict[str, torch.Tensor],
                        dropout_p: torch.Tensor,
                        memory_format: torch.memory_format | None = None,
                        kernels: str | None = None) -> tuple[Callable, Callable]:
    """The two computations a population needs, for ``params`` {name: [P, ...]} (updated in place):

    - ``train_step(x [P, B, ...], y [P, B], keys [P])`` -> gradients [P, ...] (``params`` order) of each
      model's mean NLL on its own batch, dropout keyed per model at rates ``dropout_p`` [P];
    - ``forward_shared(x [b, ...])`` -> log-probabilities [P, b, classes] in eval mode.

    Architectures in ``GROUPED_ARCHITECTURES`` run as one grouped network with autograd (conv
    activations in ``memory_format``, by default the device's faster one; ``kernels``: how
    per-model convolutions run, see ``grouped_network``); the others under
    ``torch.func.vmap`` over ``functional_call``.
    """
    n_models = len(dropout_p)
    if arch in GROUPED_ARCHITECTURES:
        # leaves share storage with ``params``, so in-place optimiser updates reach the network
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        network = grouped_network(template, leaves, memory_format, kernels)
        evaluator = shared_input_network(network)
        rates = dropout_p if bool((dropout_p > 0).any()) else None  # None: skip the masks

        def train_step(x, y, keys):
            network.train()
            out = network(to_population_arrangement(x, flat=True),
                          dropout_key=None if rates is None else keys, dropout_p=rates)  # [B, P, K]
            losses = F.nll_loss(out.flatten(0, 1), y.t().flatten(), reduction="none")
            return torch.autograd.grad(losses.view(-1, n_models).mean(0).sum(),
                                       list(leaves.values()))

        @torch.no_grad()
        def forward_shared(x):
            evaluator.eval()
            return evaluator(x).transpose(0, 1)  # the first layer shares x among the models

        return train_step, forward_shared

    def loss_of(p, x, y, key, rate):
        out = functional_call(template, p, (x,), {"dropout_key": key, "dropout_p": rate})
        return F.nll_loss(out, y)

    grad_fn = vmap(grad(loss_of))
    eval_fn = vmap(lambda p, x: functional_call(template, p, (x,)), in_dims=(0, None))

    @torch.no_grad()
    def forward_shared(x):
        template.eval()
        out = eval_fn(params, x)
        template.train()
        return out

    def train_step(x, y, keys):
        grads = grad_fn(params, x, y, keys, dropout_p)
        return [grads[n] for n in params]

    return train_step, forward_shared


def eval_batch(forward_shared: Callable, n_models: int, split: Split, per_sample: int,
               max_elements: int | None = None) -> int:
    """Images per evaluation chunk of ``split``. On a CPU (or given ``max_elements``): P models x
    chunk x ``per_sample`` activation elements within ``max_elements`` (default 4M, cache-sized,
    BENCHMARKS.md). On a GPU, from a measured forward of ``EVAL_PROBE_IMAGES`` images:
    ``GPU_EVAL_MEMORY_SHARE`` of the memory the device can still give over its peak bytes per
    image, so that temporaries the activation count does not see (unfolded patches, the depthwise
    kernels' per-channel outputs) are counted too, and no tensor of the forward past
    ``GPU_TENSOR_ELEMENTS`` (kernels that index in 32 bits, PyTorch's depthwise convolution
    among them, refuse larger ones)."""
    if max_elements is None and split.x.device.type == "cuda" and len(split):
        device = split.x.device
        probe = split.x[:EVAL_PROBE_IMAGES]
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        largest = largest_output(forward_shared, probe) / len(probe)  # elements per image
        per_image = max(1, torch.cuda.max_memory_allocated(device) - before) / len(probe)
        free, _ = torch.cuda.mem_get_info(device)  # plus what the caching allocator holds unused
        usable = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        batch = min(GPU_EVAL_MEMORY_SHARE * usable // per_image,
                    GPU_TENSOR_ELEMENTS // max(1.0, largest))
    else:
        batch = (max_elements or CPU_EVAL_ELEMENTS) // (n_models * per_sample)
    return int(max(1, min(len(split), batch)))


class _LargestOutput(TorchDispatchMode):
    """Records the most elements any operation's output tensor holds."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor):
                self.elements = max(self.elements, value.numel())
        return out


def largest_output(fn: Callable, *args) -> int:
    """Elements of the largest tensor any operation of ``fn(*args)`` outputs, temporaries
    included (each ATen operation, seen by a dispatch mode)."""
    with _LargestOutput() as mode:
        fn(*args)
    return mode.elements


@torch.no_grad()
def evaluate_population(forward_shared: Callable, n_models: int, split: Split, per_sample: int,
                        max_elements: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-model (mean NLL [P], accuracy [P]) on a whole split, the inputs shared by all models.

    ``forward_shared``: x [b, ...] -> log-probabilities [P, b, classes] (``population_forwards``);
    ``per_sample``: activation elements of one model on one input (``activation_elements``);
    chunks of images as ``eval_batch`` sizes them.
    """
    batch = eval_batch(forward_shared, n_models, split, per_sample, max_elements)
    loss = torch.zeros(n_models, dtype=torch.float64, device=split.x.device)
    correct = torch.zeros(n_models, dtype=torch.float64, device=split.x.device)
    for xb, yb in zip(split.x.split(batch), split.y.split(batch)):
        out = forward_shared(xb)  # [P, b, classes]
        loss += F.nll_loss(out.flatten(0, 1), yb.repeat(n_models), reduction="none") \
            .view(n_models, -1).double().sum(1)
        correct += (out.argmax(-1) == yb).double().sum(1)
    n = max(len(split), 1)
    return (loss / n).cpu().numpy(), (correct / n).cpu().numpy()


def activation_elements(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Total elements of all leaf-module outputs for input ``x``."""
    total = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel()))
             for m in model.modules() if not list(m.children())]
    model(x)
    for h in hooks:
        h.remove()
    return total[0]
