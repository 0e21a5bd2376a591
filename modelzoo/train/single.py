"""Training one model per config: the reference loop's parts (``train_epoch`` with torch.nn and
torch.optim) and what every training loop shares (``modelzoo.train.alone.train_model`` runs them).

Shared with the population trainer (``modelzoo.train.population``) so both draw identical randomness:
- initial weights: ``build_model`` seeds torch with the config's seed, then builds the architecture;
- training subset: the first ``round(train_fraction * n)`` items of a permutation keyed by the seed;
- data order: a fresh keyed permutation of that subset every epoch; incomplete last batches dropped;
- dropout masks: keyed by (seed, global step, layer) through ``step_keys``.
Per stored epoch (0 = untrained) it records the flat state and train/val/test loss (mean NLL) and
accuracy (fraction), evaluated in eval mode on the whole split.
"""

import contextlib
import threading

import torch
import torch.nn.functional as F

from modelzoo.data import Split
from modelzoo.models import ZooModel, count_parameters, create_model
from modelzoo.randomness import derive_key, keyed_uniform, permutation, seed_key
from modelzoo.specs import TrainingConfig

EVAL_BATCH = 2048
MIXED_PRECISION_PARAMS = 1_000_000  # bf16 autocast on a GPU from this many parameters
# torch's global generator and backend flags, changed by the sections below: populations train
# side by side in threads (modelzoo.train.cores)
_GLOBAL_RNG = threading.Lock()
_FLAGS = threading.Lock()
_exact_float32_users = 0
_saved_tf32: tuple[bool, bool] = (False, False)


def model_kwargs(arch_kwargs: dict, config: TrainingConfig) -> dict:
    """Constructor arguments of one model: the spec's architecture kwargs plus its config's."""
    return {**arch_kwargs, "activation": config.activation, "init": config.init,
            "dropout": config.dropout, "bias_init": config.bias_init}


def build_model(arch: str, arch_kwargs: dict, config: TrainingConfig) -> ZooModel:
    """The untrained model of a config: initialised under ``torch.manual_seed(config.seed)``."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_model(arch, **model_kwargs(arch_kwargs, config))


def train_subset(config: TrainingConfig, n_train: int) -> torch.Tensor:
    """Indices (int64 [k]) of the training items this model sees, k = round(fraction * n)."""
    k = max(config.batch_size, int(round(config.train_fraction * n_train)))
    return permutation(config.seed, 0, n_train)[:min(k, n_train)]


def epoch_batches(config: TrainingConfig, subset: torch.Tensor, epoch: int) -> torch.Tensor:
    """Batches of one epoch (1-based): int64 [steps, batch_size] indices into the training split."""
    order = subset[permutation(config.seed, epoch, len(subset))]
    steps = len(order) // config.batch_size
    return order[:steps * config.batch_size].view(steps, config.batch_size)


def seed_roots(seeds: list[int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Root keys of models with these seeds: int64 [P]."""
    return torch.tensor([seed_key(int(s)) for s in seeds], dtype=torch.int64, device=device)


def step_keys(roots: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
    """Dropout / augmentation keys of each model's global step (int64 [P])."""
    return derive_key(roots, steps)


def augment_batch(x: torch.Tensor, key: torch.Tensor, augment: list[str]) -> torch.Tensor:
    """Keyed random crop (pad 4) and horizontal flip of images [B, C, H, W]."""
    b, _, h, w = x.shape
    if "crop" in augment:
        padded = F.pad(x, (4, 4, 4, 4))
        offsets = (keyed_uniform(derive_key(key, 101), (2, b)) * 9).long().clamp_max(8)
        rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if "flip" in augment:
        flip = keyed_uniform(derive_key(key, 102), (b,)) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """(mean NLL loss, accuracy) of ``model`` in eval mode over a whole split."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for xb, yb in zip(split.x.split(EVAL_BATCH), split.y.split(EVAL_BATCH)):
        out = model(xb).float()
        loss += F.nll_loss(out, yb, reduction="sum").item()
        correct += (out.argmax(-1) == yb).sum().item()
    model.train(was_training)
    n = max(len(split), 1)
    return loss / n, correct / n


def make_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The config's learning-rate schedule, stepped once per batch (None: constant)."""
    if config.schedule != "onecycle" or config.epochs == 0:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                               total_steps=config.epochs * steps_per_epoch)


@torch.no_grad()
def apply_mask(model: torch.nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Multiply every state tensor named in ``keep`` by its 0/1 mask, in place."""
    state = model.state_dict()
    for name, mask in keep.items():
        state[name].mul_(mask)


def mixed_precision(model: torch.nn.Module, device: torch.device) -> bool:
    """bf16 autocast and channels_last for this model: on a GPU, for models of at least
    ``MIXED_PRECISION_PARAMS`` parameters (ResNet-18); small zoo models train in float32."""
    return device.type == "cuda" and count_parameters(model) >= MIXED_PRECISION_PARAMS


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def exact_float32():
    """No TF32 in convolutions or matmuls (cuDNN allows it by default): float32 training on a GPU
    then matches the CPU and the population path to float rounding. Nested or in several threads
    at once, the flags come back when the last user leaves."""
    global _exact_float32_users, _saved_tf32
    with _FLAGS:
        if _exact_float32_users == 0:
            _saved_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        _exact_float32_users += 1
    try:
        yield
    finally:
        with _FLAGS:
            _exact_float32_users -= 1
            if _exact_float32_users == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = \
                    _saved_tf32


def train_epoch(model: ZooModel, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None, config: TrainingConfig,
                batches: torch.Tensor, x: torch.Tensor, y: torch.Tensor, root: torch.Tensor,
                first_step: int, keep: dict[str, torch.Tensor] | None = None,
                mixed: bool = False) -> None:
    """One epoch of one model over ``batches`` (int64 [steps, batch] indices into x [N, ...],
    y [N]); step i draws its dropout / augmentation key from global step ``first_step + i``."""
    model.train()
    keys = step_keys(root, torch.arange(first_step, first_step + len(batches), device=root.device))
    for idx, key in zip(batches, keys):
        xb = x[idx]
        if config.augment:
            xb = augment_batch(xb, key, config.augment)
        if mixed:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(mixed):
            loss = F.nll_loss(model(xb, dropout_key=key).float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if keep is not None:
            apply_mask(model, keep)
        if scheduler is not None:
            scheduler.step()
