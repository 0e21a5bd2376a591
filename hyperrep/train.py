"""Training a hyper-representation on a zoo, with checkpoint/resume.

A run directory holds ``config.json`` (training + model config, zoo), ``metrics.jsonl`` (one line per
epoch), ``checkpoint.pt`` (model + optimizer + epoch, read back with ``weights_only=True``),
``model.safetensors`` (final weights; layer scales in its metadata) and, for a canonical run,
``reference.safetensors`` (the weight-matching reference every model is aligned to).
``hyperrep.run`` reads runs back and embeds zoos with them.
"""

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hyperrep.canonical import canonical_reference
from hyperrep.config import TrainConfig
from hyperrep.data import ZooTokens, make_views
from hyperrep.losses import combined_loss
from hyperrep.model import build_autoencoder
from hyperrep.tokenise import TokenMap
from modelzoo.errors import ZooError
from modelzoo.zoo import open_zoo


def _step_loss(model, flat, tokens: TokenMap, perms, cfg, generators, device):
    """Loss of one batch ``flat`` [B, P] (on the host) and its two augmented views, built on the
    model's ``device``. ``generators``: (host, device) generators, the same one on the CPU."""
    v1 = make_views(flat, tokens, perms, cfg, *generators)
    v2 = make_views(flat, tokens, perms, cfg, *generators)
    positions, mask = tokens.positions, tokens.mask
    window = model.cfg.window
    if window and window < tokens.n_tokens:  # one random window per model, the same in both views
        starts = torch.randint(tokens.n_tokens - window + 1, (len(flat),), generator=generators[0])
        index = (starts[:, None] + torch.arange(window)).to(device)  # [B, W]
        rows = torch.arange(len(flat), device=device)[:, None]
        v1, v2 = v1[rows, index], v2[rows, index]
        positions, mask = positions[index], mask[index]  # [B, W, 3], [B, W, S]
        positions = torch.cat([positions, positions])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        both = torch.cat([v1, v2])
        _, rec, proj = model(both, positions)
    rec, proj = rec.float(), proj.float()
    n = len(v1)
    return combined_loss(cfg.gamma, proj[:n], proj[n:], rec[:n], rec[n:], v1, v2, mask,
                         cfg.temperature)


RESUMABLE = ("epochs", "pooling")  # keys a run may be resumed (or re-read) with changed


def train(zoo_path: Path, run: Path, cfg: TrainConfig, device: str = "cpu",
          on_epoch: Callable[[int, dict], None] | None = None) -> Path:
    """Train (or resume) a hyper-representation on the zoo's train-split models.

    Rerunning into an existing run resumes from its checkpoint; only ``epochs`` (to train longer)
    and ``pooling`` (the embedding's readout) may change, any other setting must match.
    """
    run = Path(run)
    device = torch.device(device)
    zoo = open_zoo(zoo_path)
    data = ZooTokens(zoo, cfg.token_size, cfg.zoo_epochs)
    split = zoo.split_models(cfg.split_seed)
    train_rows, val_rows = data.rows_of(split["train"]), data.rows_of(split["val"])
    if len(train_rows) < 2:
        raise ZooError(f"{zoo_path}: too few models to train on ({len(zoo)} in the zoo)")
    # no permutations and no canonical form: architectures without a permutation plan train too
    plan = data.permutation_plan() if cfg.permutations or cfg.canonical else None
    if plan is not None:
        _check_permutation_memory(cfg.permutations, zoo.n_params)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.canonical:
        reference_path = run / "reference.safetensors"
        if reference_path.exists():
            reference = load_file(str(reference_path))["reference"]
        else:
            reference = canonical_reference(plan, data.flat[data.last_epoch_rows(train_rows)])
            save_file({"reference": reference.float().contiguous()}, str(reference_path))
        data.canonicalise(plan, reference.float())
    data.fit_scale(train_rows, cfg.standardise)
    config = {"zoo": str(zoo_path), "zoo_name": zoo.name, "train": cfg.model_dump(mode="json"),
              "zoo_epochs": data.epochs, "layer_scale": data.layer_scale.tolist(),
              "layer_shift": data.layer_shift.tolist(),
              "n_params": zoo.n_params, "zoo_tokens": data.tokens.n_tokens,
              "splits": {k: v.tolist() for k, v in split.items()}}
    config_path = run / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())
        # new keys at defaults; runs recorded before ``mode`` existed are compression runs
        old_train = TrainConfig(**{"mode": "compression", **old["train"]}).model_dump(mode="json")
        same = {k: v for k, v in old_train.items() if k not in RESUMABLE} == \
            {k: v for k, v in config["train"].items() if k not in RESUMABLE}
        if not same or old["zoo_name"] != zoo.name:
            raise ZooError(f"{run} holds a run with another config or zoo; choose another --out")
        if cfg.schedule == "onecycle" and old_train["epochs"] != cfg.epochs:
            raise ZooError(f"{run} was trained with a OneCycle schedule over "
                           f"{old_train['epochs']} epochs: it cannot be resumed with another "
                           f"number of epochs; choose another --out")
    torch.manual_seed(cfg.seed)
    model = build_autoencoder(cfg, data.tokens).to(device)
    config["model"] = model.cfg.to_dict()
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    perms = plan.sample(cfg.permutations, torch.Generator().manual_seed(cfg.seed)) if plan \
        else torch.zeros(0, zoo.n_params, dtype=torch.int64)
    start_epoch = 0
    checkpoint = run / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
    train_flat = data.normalised(train_rows)
    val_flat = data.normalised(val_rows) if len(val_rows) else train_flat[:0]
    batch = min(cfg.batch_size, len(train_flat))
    # several random windows of each model per epoch: each model appears that often in an epoch
    repeats = cfg.windows_per_model if model.cfg.window < data.tokens.n_tokens else 1
    steps = max(1, len(train_flat) * repeats // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps) \
        if cfg.schedule == "onecycle" else None
    if schedule is not None and checkpoint.exists():
        schedule.load_state_dict(state["schedule"])
    tokens = data.tokens.to(device)  # views are tokenised, noised and erased on the device
    for epoch in range(start_epoch, cfg.epochs):
        generators = _generators(cfg.seed * 100_003 + epoch, device)
        order = torch.randperm(len(train_flat) * repeats, generator=generators[0]) % len(train_flat)
        model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # summed without a host sync
        for step in range(steps):
            rows = order[step * batch:(step + 1) * batch]
            loss, contrastive, mse = _step_loss(model, train_flat[rows], tokens, perms, cfg,
                                                generators, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            totals += torch.stack([loss.detach(), contrastive.detach(), mse.detach()]).double()
        mean_loss, mean_contrastive, mean_mse = (totals / steps).tolist()
        record = {"epoch": epoch + 1, "loss": mean_loss, "contrastive": mean_contrastive,
                  "mse": mean_mse,
                  "val_loss": evaluate_loss(model, val_flat, tokens, perms, cfg, device)}
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        tmp = run / ".checkpoint.pt.tmp"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    **({"schedule": schedule.state_dict()} if schedule else {})}, tmp)
        tmp.replace(checkpoint)
        if on_epoch:
            on_epoch(epoch + 1, record)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(run / "model.safetensors"), metadata={"config": json.dumps(config)})
    zoo.close()
    return run


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable; free pages where unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_permutation_memory(permutations: int, n_params: int) -> None:
    """The permutation pool is ``permutations`` gather indices of int64 [P]: refuse up front (one
    error line) where it would take more than half the available memory, instead of being killed."""
    need, budget = permutations * n_params * 8, available_memory() // 2
    if need > budget:
        raise ZooError(f"permutations: {permutations} of {n_params:,} parameters need "
                       f"{need / 2**30:.1f} GiB of gather indices, more than half the "
                       f"{2 * budget / 2**30:.1f} GiB available; set permutations to at most "
                       f"{budget // (n_params * 8)} (or 0 with canonical: true)")


def _generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(host, device) generators seeded with ``seed``; on the CPU one generator serves both."""
    host = torch.Generator().manual_seed(seed)
    return host, host if device.type == "cpu" else torch.Generator(device).manual_seed(seed)


@torch.no_grad()
def evaluate_loss(model, flat, tokens: TokenMap, perms, cfg: TrainConfig, device) -> float:
    """Loss on held-out samples with a fixed augmentation draw (comparable across epochs)."""
    if len(flat) < 2:
        return math.nan
    model.eval()
    generators = _generators(12345, device)
    losses = [_step_loss(model, chunk, tokens, perms, cfg, generators, device)[0]
              for chunk in flat.split(max(2, cfg.batch_size)) if len(chunk) >= 2]
    return float(torch.stack(losses).double().mean())
