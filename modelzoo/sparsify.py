"""Sparsified twins: every model of a zoo pruned and fine-tuned, stored beside the dense states.

``zoo sparsify ZOO --method magnitude --ratios 0.5,0.7,0.9 [--scope global|layer]
[--finetune-epochs K] [--from-epoch E]``: for each ratio, each model's state at epoch E (default: the
last) has that fraction of its prunable weights (the weight tensors of conv and linear layers, not
biases or BatchNorm) set to zero, the smallest magnitudes first, over all layers together
(``global``, as ``torch.nn.utils.prune.global_unstructured`` with L1) or layer by layer
(``layer``, as ``l1_unstructured`` per tensor). The pruned model is fine-tuned for K epochs with its
mask held (the effective weights of ``torch.nn.utils.prune``), as vectorised populations where the
architecture allows, with fresh data-order seeds. ``--method structured`` removes whole channels /
hidden neurons instead (torch-pruning's L1 magnitude pruner, the ratio of each layer's channels, or
of all with ``--scope global``), stored as zeros in the dense layout. ``--method variational-dropout`` instead trains
each model for K epochs with sparse variational dropout (``variational_dropout_twin``) and keeps the
sparsity it reaches (one twin set, no ratios).

Storage: the twin format of ``modelzoo.archive.twins`` (crash-safe like the dense shards), listed
in the manifest's ``twins``; ``Zoo.twin(name)`` reads a set. A rerun resumes: finished twin shards
are kept.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from modelzoo.archive import Layout, Manifest, ModelRun, shard_ranges, validate_archive, writing
from modelzoo.archive.twins import prunable, write_twin_shard
from modelzoo.data import DataSplits
from modelzoo.errors import ZooError
from modelzoo.models import create_model
from modelzoo.specs import TrainingConfig
from modelzoo.train import build_model, load_data, train_configs
from modelzoo.train.record import RunRecorder
from modelzoo.train.single import epoch_batches, evaluate, seed_roots, step_keys, train_subset
from modelzoo.train.stream import ShardStates, plans_across_shards, train_across_shards
from modelzoo.zoo import open_zoo

METHODS = ("magnitude", "structured", "variational-dropout")
LOG_SIGMA2_INIT, LOG_ALPHA_THRESHOLD = -10.0, 3.0  # Molchanov et al. 2017, as published for twins
KL_K1, KL_K2, KL_K3 = 0.63576, 1.87320, 1.48695  # their approximation of -KL(q || log-uniform)
SCOPES = ("global", "layer")
TWIN_SEED_OFFSET = 2_000_000  # fine-tuning data order seeds, away from the zoo's own seeds



def magnitude_masks(flat: np.ndarray, layout: Layout, ratio: float, scope: str = "global") -> np.ndarray:
    """Keep masks bool [N, params] that zero ``round(ratio * n)`` smallest-magnitude prunable values
    per model (``global``: n = all prunable values; ``layer``: n = each weight tensor's size)."""
    flat = np.atleast_2d(flat)
    masks = np.ones(flat.shape, dtype=bool)
    groups = [np.nonzero(prunable(layout))[0]] if scope == "global" else [
        np.arange(e.offset, e.offset + e.size) for e in layout.entries
        if e.kind == "param" and len(e.shape) >= 2]
    for index in groups:
        k = int(round(ratio * len(index)))
        if k == 0:
            continue
        order = np.argsort(np.abs(flat[:, index]), axis=1, kind="stable")[:, :k]
        rows = np.repeat(np.arange(len(flat)), k)
        masks[rows, index[order].reshape(-1)] = False
    return masks


def structured_masks(flat: np.ndarray, layout: Layout, arch: str, arch_kwargs: dict,
                     input_shape: tuple[int, ...], ratio: float, scope: str = "layer") -> np.ndarray:
    """Keep masks bool [N, params] that remove whole channels / hidden neurons, chosen per model by
    torch-pruning's L1 magnitude pruner (``ratio`` of each layer's channels, or of all channels
    together with ``global``; the classifier's outputs are never pruned). A removed channel's
    incoming weights, bias, BatchNorm affine parameters and its consumers' input columns are zeroed,
    so the masked model computes what torch-pruning's physically smaller model computes."""
    import torch_pruning as tp

    masks = np.ones(np.atleast_2d(flat).shape, dtype=bool)
    for row, values in enumerate(np.atleast_2d(flat)):
        model = create_model(arch, **arch_kwargs).eval()
        layout.load_into(model, values)
        names = {module: name for name, module in model.named_modules()}
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        pruner = tp.pruner.MagnitudePruner(
            model, torch.zeros(1, *input_shape), importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio, global_pruning=scope == "global", ignored_layers=[classifier])
        keep = {e.name: np.ones(e.shape, dtype=bool) for e in layout.entries}
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                module = names.get(dep.target.module)
                if module is None:
                    continue
                idxs = list(idxs)
                outgoing = dep.handler.__name__ == "prune_out_channels"
                for param in ("weight", "bias"):
                    key = f"{module}.{param}" if module else param
                    if key not in keep or keep[key].ndim == 0:
                        continue
                    if outgoing:
                        keep[key][idxs] = False
                    elif param == "weight" and keep[key].ndim >= 2:
                        keep[key][:, idxs] = False
        masks[row] = np.concatenate([keep[e.name].reshape(-1) if e.kind == "param"
                                     else np.ones(e.size, dtype=bool) for e in layout.entries])
    return masks



def neg_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s approximation of -KL(q(w) || log-uniform prior), per weight."""
    return KL_K1 * torch.sigmoid(KL_K2 + KL_K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - KL_K1


def variational_dropout_twin(arch: str, arch_kwargs: dict, config: TrainingConfig,
                             data: DataSplits, initial: np.ndarray, epochs: int,
                             device: str | torch.device = "cpu") -> tuple[ModelRun, np.ndarray]:
    """Sparse variational dropout from ``initial`` [params] for ``epochs`` epochs.

    Every prunable tensor w gets log sigma^2 (initialised to -10); training samples
    w + sigma * eps per step and minimises NLL + kl_w * sum KL with kl_w = min(1, 0.01 * epoch / 25)
    (as published for the twins, KL summed over the weights). A weight is zeroed where
    log alpha = log sigma^2 - log w^2 >= 3. States [epochs + 1, params] hold the zeroed weights after
    each epoch (state 0 = ``initial``); returns (run, final keep mask bool [params]).
    """
    device = torch.device(device)
    model = build_model(arch, arch_kwargs, config).to(device)
    layout = Layout.of(model)
    layout.load_into(model, initial)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    noisy = [e.name for e in layout.entries if e.kind == "param" and len(e.shape) >= 2]
    log_sigma2 = {n: torch.full_like(params[n], LOG_SIGMA2_INIT, requires_grad=True) for n in noisy}
    optimizer = torch.optim.Adam([*params.values(), *log_sigma2.values()], lr=config.lr)
    splits = data.on(device)
    subset = train_subset(config, len(data.train)).to(device)
    steps = len(subset) // config.batch_size
    root = seed_roots([config.seed], device)
    noise = torch.Generator(device=device).manual_seed(config.seed)

    def log_alpha(name):
        return log_sigma2[name] - torch.log(params[name] ** 2 + 1e-8)

    def sparse_state() -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {n: p * (log_alpha(n) < LOG_ALPHA_THRESHOLD) if n in log_sigma2 else p
                    for n, p in params.items()}

    recorder = RunRecorder()

    def record(state):
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(state[name])
        recorder.add_splits(layout.flatten(model.state_dict()),
                            {name: evaluate(model, split) for name, split in splits.items()})

    record({n: p.detach() for n, p in params.items()})
    x_train, y_train = splits["train"].x, splits["train"].y
    model.train()
    for epoch in range(1, epochs + 1):
        kl_weight = min(1.0, 0.01 * epoch / 25)
        for i, idx in enumerate(epoch_batches(config, subset.cpu(), epoch)):
            key = step_keys(root, (epoch - 1) * steps + i)[0]
            sampled = dict(params)
            for n in noisy:
                eps = torch.randn(params[n].shape, generator=noise, device=device)
                sampled[n] = params[n] + torch.exp(0.5 * log_sigma2[n]) * eps
            out = functional_call(model, sampled, (x_train[idx],), {"dropout_key": key})
            kl = -sum(neg_kl(log_alpha(n)).sum() for n in noisy)
            loss = F.nll_loss(out, y_train[idx]) + kl_weight * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        record(sparse_state())
    keep = np.ones(layout.size, dtype=bool)
    with torch.no_grad():
        for n in noisy:
            e = next(e for e in layout.entries if e.name == n)
            keep[e.offset:e.offset + e.size] = (log_alpha(n) < LOG_ALPHA_THRESHOLD).cpu() \
                .reshape(-1).numpy()
    return recorder.run(), keep


@dataclass(frozen=True)
class TwinSpec:
    method: str
    ratio: float | None  # None: variational dropout chooses its own sparsity
    scope: str
    from_epoch: int
    finetune_epochs: int

    def settings(self) -> dict:
        """What the manifest records of a twin set (a rerun must ask for the same)."""
        return {"method": self.method, "ratio": self.ratio, "scope": self.scope,
                "from_epoch": self.from_epoch, "finetune_epochs": self.finetune_epochs}

    @property
    def name(self) -> str:
        if self.ratio is None:
            return self.method
        return f"{self.method}-{self.scope}-{self.ratio:g}"


def sparsify(root: Path, method: str, ratios: list[float], scope: str = "global",
             finetune_epochs: int = 1, from_epoch: int | None = None, device: str = "cpu",
             population_size: int | None = None,
             on_shard: Callable[[str, int], None] | None = None) -> list[str]:
    """Add (or finish) one twin set per ratio to the archive at ``root``; returns their names."""
    root = Path(root)
    if method not in METHODS:
        raise ZooError(f"--method {method}: choose from {', '.join(METHODS)}")
    if scope not in SCOPES:
        raise ZooError(f"--scope {scope}: choose from {', '.join(SCOPES)}")
    if method != "variational-dropout" and (not ratios or any(not 0 < r < 1 for r in ratios)):
        raise ZooError(f"--ratios {ratios}: each must be between 0 and 1")
    if finetune_epochs < 0:
        raise ZooError("--finetune-epochs must be >= 0")
    problems = validate_archive(root)
    if problems:
        raise ZooError(f"{root}: {problems[0]}")
    with open_zoo(root) as zoo:
        if not zoo.complete:
            raise ZooError(f"{root}: the zoo is incomplete; finish it first (zoo generate --resume)")
        if zoo.task != "classification":
            raise ZooError(f"{root}: zoo sparsify supports classification zoos; this one is "
                           f"a {zoo.task!r} zoo")
        epoch = zoo.epochs[-1] if from_epoch is None else from_epoch
        if epoch not in zoo.epochs:
            raise ZooError(f"--from-epoch {epoch}: stored epochs are {zoo.epochs}")
        data = load_data(zoo.spec)
        specs = [TwinSpec(method, float(r), scope, epoch, finetune_epochs) for r in ratios] \
            if method != "variational-dropout" else [TwinSpec(method, None, "global", epoch, finetune_epochs)]
        with writing(root):
            manifest = Manifest.read(root)
            arch, arch_kwargs = manifest.architecture, manifest.architecture_kwargs
            across_shards = plans_across_shards(zoo.spec, population_size, device)
            # the twins' fine-tuning configs, by zoo index
            configs = [c.model_copy(update={"epochs": finetune_epochs, "save_epochs": None,
                                            "seed": TWIN_SEED_OFFSET + c.seed})
                       for c in map(zoo.config, range(len(zoo)))]
            for spec in specs:
                entry = manifest.twin_entry(spec.name, spec.settings())
                done = {tuple(s["models"]) for s in entry["shards"]}
                pending = [r for r in shard_ranges(len(zoo), manifest.shard_size)
                           if r not in done]
                shard_masks: dict[int, np.ndarray] = {}  # by shard start, until written

                def prepare(start: int, stop: int) -> ShardStates:
                    """The shard's starting states and masks (None: the variational dropout
                    run finds them)."""
                    dense = np.stack([zoo.flat(m, epoch) for m in range(start, stop)])
                    if spec.ratio is None:
                        return dense, None
                    if method == "structured":
                        masks = structured_masks(dense, zoo.layout, arch, arch_kwargs,
                                                 data.input_shape, spec.ratio, scope)
                    else:
                        masks = magnitude_masks(dense, zoo.layout, spec.ratio, scope)
                    shard_masks[start] = masks
                    return dense * masks, masks

                def train_shard(start: int, stop: int) -> tuple[int, int, list[ModelRun]]:
                    initial, masks = prepare(start, stop)
                    if masks is not None:
                        return start, stop, train_configs(zoo.spec, configs[start:stop], data,
                                                          device, population_size, initial, masks)
                    pairs = [variational_dropout_twin(arch, arch_kwargs, c, data, d,
                                                      finetune_epochs, device)
                             for c, d in zip(configs[start:stop], initial)]
                    shard_masks[start] = np.stack([p[1] for p in pairs])
                    return start, stop, [p[0] for p in pairs]

                if spec.ratio is not None and across_shards:
                    shards = train_across_shards(zoo.spec, configs, pending, data, device,
                                                 population_size, prepare)
                else:
                    shards = (train_shard(start, stop) for start, stop in pending)
                for start, stop, runs in shards:
                    write_twin_shard(root, manifest, entry, start, stop, runs,
                                     shard_masks.pop(start))
                    if on_shard is not None:
                        on_shard(spec.name, stop - start)
                manifest.complete_twins(spec.name)
                manifest.save(root)
    return [s.name for s in specs]
