"""Training a hyper-representation on a zoo, with checkpoint/resume, and embedding models with it.

A run directory holds ``config.json`` (training + model config, zoo), ``metrics.jsonl`` (one line per
epoch), ``checkpoint.pt`` (model + optimizer + epoch, read back with ``weights_only=True``),
``model.safetensors`` (final weights; layer scales in its metadata) and, for a canonical run,
``reference.safetensors`` (the weight-matching reference every model is aligned to).
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file

from hyperrep.augment import PermutationPlan, add_noise, random_erase
from hyperrep.canonical import canonical_reference, match_to_reference
from hyperrep.losses import combined_loss
from hyperrep.model import HyperRepresentation, ModelConfig
from hyperrep.tokenise import TokenMap, build_token_map, tokenise
from modelzoo.errors import ZooError
from modelzoo.zoo import Zoo, open_zoo


class TrainConfig(BaseModel):
    """Everything a run is trained with (``--config`` YAML keys; CLI flags override)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = 5e-4
    weight_decay: float = 1e-9
    gamma: float = 0.05  # 1: contrastive only (E_c), 0: reconstruction only (E_D); 0.05 as in 2024
    temperature: float = 0.1
    noise: float = 0.05
    erase_p: float = 0.5
    permutations: int = Field(500, ge=0)  # random function-preserving permutations drawn from (0: none)
    canonical: bool = False  # align every model to one reference by weight matching first
    zoo_epochs: list[int] | None = None  # stored epochs used as samples; default: all but 0
    token_size: int | None = 64
    d_model: int = 128
    heads: int = 4
    encoder_blocks: int = 2
    decoder_blocks: int = 2
    latent: int = 512  # 512 beat 64 on 6 of 7 probes of the digits Hyp zoo (BENCHMARKS.md)
    window: int | None = Field(None, ge=2)  # tokens per window for large models (None: whole)
    proj_dim: int = 32
    split_seed: int = 0
    seed: int = 0


def load_train_config(path: Path | None, overrides: dict) -> TrainConfig:
    data = {}
    if path is not None:
        if not Path(path).is_file():
            raise ZooError(f"--config {path} does not exist")
        data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ZooError(f"hyperrep config: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class ZooTokens:
    """A zoo's samples (model x epoch) as layer-normalised flat weights plus the token map."""

    def __init__(self, zoo: Zoo, token_size: int | None, zoo_epochs: list[int] | None):
        self.zoo = zoo
        self.epochs = zoo_epochs or [e for e in zoo.epochs if e > 0] or zoo.epochs
        self.tokens: TokenMap = build_token_map(zoo.layout, token_size)
        self.param_layer = torch.zeros(zoo.n_params, dtype=torch.int64)
        self.param_layer[self.tokens.index[self.tokens.mask]] = \
            self.tokens.token_layer[:, None].expand_as(self.tokens.index)[self.tokens.mask]
        weights = torch.from_numpy(zoo.weights(self.epochs))  # [M, E, P]
        self.flat = weights.reshape(-1, zoo.n_params)
        self.models = np.repeat(zoo.model_ids, len(self.epochs))
        self.sample_epochs = np.tile(self.epochs, len(zoo))
        self.layer_scale: torch.Tensor | None = None
        self.plan: PermutationPlan | None = None
        self.reference: torch.Tensor | None = None  # set by canonicalise

    def permutation_plan(self) -> PermutationPlan:
        """The function-preserving permutations of this zoo's architecture."""
        return PermutationPlan(self.zoo.manifest["architecture"]["name"], self.zoo.layout)

    def canonicalise(self, plan: PermutationPlan, reference: torch.Tensor) -> None:
        """Permute every model (all its epochs alike) to match ``reference`` [P] at its last epoch."""
        self.plan, self.reference = plan, reference
        per_model = self.flat.view(-1, len(self.epochs), self.zoo.n_params)
        index = match_to_reference(plan, per_model[:, -1], reference)
        self.flat = torch.gather(per_model, 2, index[:, None].expand_as(per_model)) \
            .reshape(-1, self.zoo.n_params)

    def aligned(self, flat: torch.Tensor) -> torch.Tensor:
        """Other states [N, P] of this architecture as the run sees them: matched to the run's
        reference when it is canonical, else unchanged."""
        if self.reference is None:
            return flat
        return torch.gather(flat, 1, match_to_reference(self.plan, flat, self.reference))

    def last_epoch_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows among ``rows`` that hold a model's last used epoch."""
        return rows[self.sample_epochs[rows] == self.epochs[-1]]

    def fit_scale(self, rows: np.ndarray) -> None:
        """Per-layer std of the training samples' weights (the layer-wise loss normalisation)."""
        flat = self.flat[rows]
        n_layers = len(self.tokens.layer_names)
        scale = torch.ones(n_layers)
        for layer in range(n_layers):
            values = flat[:, self.param_layer == layer]
            scale[layer] = values.std().clamp_min(1e-8) if values.numel() > 1 else 1.0
        self.layer_scale = scale

    def normalised(self, rows: np.ndarray | slice) -> torch.Tensor:
        return self.flat[rows] / self.layer_scale[self.param_layer]

    def rows_of(self, models: np.ndarray) -> np.ndarray:
        return np.nonzero(np.isin(self.models, models))[0]


def make_views(flat: torch.Tensor, tokens: TokenMap, perms: torch.Tensor, cfg: TrainConfig,
               generator: torch.Generator) -> torch.Tensor:
    """One augmented view per sample: permute -> tokenise -> noise -> erase. [B, T, S]."""
    if len(perms):
        choice = torch.randint(len(perms), (len(flat),), generator=generator)
        flat = torch.gather(flat, 1, perms[choice])
    view = tokenise(flat, tokens)
    view = add_noise(view, tokens.mask, cfg.noise, generator)
    return random_erase(view, tokens.mask, cfg.erase_p, generator=generator)


MAX_DECODER_INPUT = 300_000_000  # parameters of the latent -> all-tokens projection we allow


def window_of(cfg: TrainConfig, tokens: TokenMap) -> int:
    """Tokens per window (0: whole models)."""
    return 0 if cfg.window is None or cfg.window >= tokens.n_tokens else cfg.window


def window_starts(n_tokens: int, window: int) -> list[int]:
    """Starts of the windows that tile a model (the last one flush with its end)."""
    starts = list(range(0, n_tokens - window + 1, window))
    return starts if starts[-1] + window == n_tokens else starts + [n_tokens - window]


def build_model(cfg: TrainConfig, tokens: TokenMap) -> HyperRepresentation:
    window = window_of(cfg, tokens)
    size = (window or tokens.n_tokens) * cfg.d_model * cfg.latent
    if size > MAX_DECODER_INPUT:
        raise ZooError(f"this zoo's models have {tokens.n_tokens:,} tokens: the decoder's latent -> "
                       f"tokens projection would hold {size:,} parameters (latent {cfg.latent} x "
                       f"d_model {cfg.d_model} x tokens); set window (tokens per window, e.g. "
                       f"256) or lower latent / d_model")
    model_cfg = ModelConfig(n_tokens=tokens.n_tokens, token_size=tokens.token_size,
                            n_layers=len(tokens.layer_names),
                            max_within=int(tokens.positions[:, 2].max()) + 1,
                            d_model=cfg.d_model, heads=cfg.heads,
                            encoder_blocks=cfg.encoder_blocks, decoder_blocks=cfg.decoder_blocks,
                            latent=cfg.latent, proj_dim=cfg.proj_dim, window=window)
    return HyperRepresentation(model_cfg)


def _step_loss(model, flat, data: ZooTokens, perms, cfg, generator, device):
    tokens = data.tokens
    v1 = make_views(flat, tokens, perms, cfg, generator).to(device)
    v2 = make_views(flat, tokens, perms, cfg, generator).to(device)
    positions, mask = tokens.positions.to(device), tokens.mask.to(device)
    window = model.cfg.window
    if window:  # one random window per model, the same in both views
        starts = torch.randint(tokens.n_tokens - window + 1, (len(flat),), generator=generator)
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


def train(zoo_path: Path, run: Path, cfg: TrainConfig, device: str = "cpu",
          on_epoch: Callable[[int, dict], None] | None = None) -> Path:
    """Train (or resume) a hyper-representation on the zoo's train-split models.

    Rerunning into an existing run resumes from its checkpoint; only ``epochs`` may change (to train
    longer), any other setting must match.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    zoo = open_zoo(zoo_path)
    data = ZooTokens(zoo, cfg.token_size, cfg.zoo_epochs)
    split = zoo.split_models(cfg.split_seed)
    train_rows, val_rows = data.rows_of(split["train"]), data.rows_of(split["val"])
    if len(train_rows) < 2:
        raise ZooError(f"{zoo_path}: too few models to train on ({len(zoo)} in the zoo)")
    # no permutations and no canonical form: architectures without a permutation plan train too
    plan = data.permutation_plan() if cfg.permutations or cfg.canonical else None
    if cfg.canonical:
        reference_path = run / "reference.safetensors"
        if reference_path.exists():
            reference = load_file(str(reference_path))["reference"]
        else:
            reference = canonical_reference(plan, data.flat[data.last_epoch_rows(train_rows)])
            save_file({"reference": reference.float().contiguous()}, str(reference_path))
        data.canonicalise(plan, reference.float())
    data.fit_scale(train_rows)
    config = {"zoo": str(zoo_path), "zoo_name": zoo.name, "train": cfg.model_dump(),
              "zoo_epochs": data.epochs, "layer_scale": data.layer_scale.tolist(),
              "splits": {k: v.tolist() for k, v in split.items()}}
    config_path = run / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())
        same = {k: v for k, v in old["train"].items() if k != "epochs"} == \
            {k: v for k, v in config["train"].items() if k != "epochs"}
        if not same or old["zoo_name"] != zoo.name:
            raise ZooError(f"{run} holds a run with another config or zoo; choose another --out")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.tokens).to(device)
    config["model"] = model.cfg.to_dict()
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
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
    for epoch in range(start_epoch, cfg.epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train_flat), generator=generator)
        model.train()
        totals = np.zeros(3)
        steps = max(1, len(order) // batch)
        for step in range(steps):
            rows = order[step * batch:(step + 1) * batch]
            loss, contrastive, mse = _step_loss(model, train_flat[rows], data, perms, cfg,
                                                generator, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += [loss.item(), contrastive.item(), mse.item()]
        record = {"epoch": epoch + 1, "loss": float(totals[0] / steps),
                  "contrastive": float(totals[1] / steps),
                  "mse": float(totals[2] / steps), "val_loss": evaluate_loss(model, val_flat, data, perms,
                                                                      cfg, device)}
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        tmp = run / ".checkpoint.pt.tmp"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1}, tmp)
        tmp.replace(checkpoint)
        if on_epoch:
            on_epoch(epoch + 1, record)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(run / "model.safetensors"), metadata={"config": json.dumps(config)})
    zoo.close()
    return run


@torch.no_grad()
def evaluate_loss(model, flat, data: ZooTokens, perms, cfg: TrainConfig, device) -> float:
    """Loss on held-out samples with a fixed augmentation draw (comparable across epochs)."""
    if len(flat) < 2:
        return math.nan
    model.eval()
    generator = torch.Generator().manual_seed(12345)
    losses = []
    for chunk in flat.split(max(2, cfg.batch_size)):
        if len(chunk) >= 2:
            losses.append(_step_loss(model, chunk, data, perms, cfg, generator, device)[0].item())
    return float(np.mean(losses))


def load_run(run: Path, device: str = "cpu") -> tuple[HyperRepresentation, dict]:
    """The trained model of a run (final weights, else the last checkpoint) and its config."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ZooError(f"{run} is not a hyperrep run: config.json is missing")
    config = json.loads((run / "config.json").read_text())
    model = HyperRepresentation(ModelConfig(**config["model"]))
    if (run / "model.safetensors").exists():
        model.load_state_dict(load_file(str(run / "model.safetensors")))
    elif (run / "checkpoint.pt").exists():
        model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True,
                                         map_location="cpu")["model"])
    else:
        raise ZooError(f"{run} has no trained weights yet")
    return model.to(device).eval(), config


def open_run_tokens(run: Path, zoo_path: Path,
                    device: str = "cpu") -> tuple[HyperRepresentation, ZooTokens, dict]:
    """(trained model, the zoo's samples read once with the run's layer scales, run config).

    The zoo stays open as ``data.zoo``; the caller closes it.
    """
    model, config = load_run(run, device)
    data = ZooTokens(open_zoo(zoo_path), config["train"]["token_size"], config["zoo_epochs"])
    if data.tokens.n_tokens != model.cfg.n_tokens:
        data.zoo.close()
        raise ZooError(f"{zoo_path}: architecture does not match the run's "
                       f"({data.tokens.n_tokens} tokens, run has {model.cfg.n_tokens})")
    if config["train"].get("canonical"):
        plan = data.permutation_plan()
        data.canonicalise(plan, load_file(str(Path(run) / "reference.safetensors"))["reference"])
    data.layer_scale = torch.tensor(config["layer_scale"])
    return model, data, config


@torch.no_grad()
def encode_normalised(model: HyperRepresentation, normalised: torch.Tensor, tokens: TokenMap,
                      device: str = "cpu", batch: int = 256) -> np.ndarray:
    """Layer-normalised flat weights [N, P] -> latents float32 [N, L] (windowed models: the mean
    of the latents of the windows that tile each model)."""
    positions = tokens.positions.to(device)
    window = model.cfg.window
    latents = []
    for chunk in normalised.split(batch):
        view = tokenise(chunk, tokens).to(device)
        if not window:
            latents.append(model.encode(view, positions).float().cpu())
            continue
        parts = [model.encode(view[:, s:s + window], positions[s:s + window]).float()
                 for s in window_starts(tokens.n_tokens, window)]
        latents.append(torch.stack(parts).mean(0).cpu())
    return torch.cat(latents).numpy() if latents else np.zeros((0, model.cfg.latent), np.float32)


EMBED_VIEWS = 16  # default views per embedding for runs trained with permutation augmentation
EMBED_SEED = 7  # seed of the permutations the views are drawn with


def default_views(config: dict) -> int:
    """Views a run's embeddings average over by default: EMBED_VIEWS where it was trained with
    permutation augmentation, else 1 (canonical runs, architectures without a permutation plan)."""
    train_cfg = config["train"]
    return EMBED_VIEWS if train_cfg["permutations"] and not train_cfg["canonical"] else 1


@torch.no_grad()
def encode_views(model: HyperRepresentation, normalised: torch.Tensor, tokens: TokenMap,
                 plan: PermutationPlan | None, views: int, device: str = "cpu",
                 batch: int = 256) -> np.ndarray:
    """Latents [N, L] averaged over each state [N, P] itself and ``views - 1`` seeded random
    function-preserving permutations of it (``plan`` may be None when ``views`` is 1).

    The encoder is only trained towards permutation invariance, so one encoding still depends on
    the order of hidden units; averaging over the orbit removes most of that.
    """
    if views < 1:
        raise ZooError(f"views must be at least 1, got {views}")
    latent = encode_normalised(model, normalised, tokens, device, batch)
    generator = torch.Generator().manual_seed(EMBED_SEED)
    for _ in range(views - 1):
        perm = plan.sample(1, generator)[0]
        latent += encode_normalised(model, normalised[:, perm], tokens, device, batch)
    return latent / views


def embed_samples(run: Path, zoo_path: Path, device: str = "cpu", batch: int = 256,
                  views: int | None = None) -> tuple[np.ndarray, ZooTokens, dict]:
    """(latent [N, L] of every (model, epoch) sample, the samples read once from the zoo, config).

    ``views``: see ``encode_views``; default ``default_views``. Canonical runs take 1 (their
    inputs are aligned to a reference, a permutation would undo that). The zoo stays open as
    ``data.zoo``; the caller closes it.
    """
    model, data, config = open_run_tokens(run, zoo_path, device)
    views = default_views(config) if views is None else views
    plan = None
    if views > 1:
        if config["train"]["canonical"]:
            data.zoo.close()
            raise ZooError(f"{run} is a canonical run (weights aligned to a reference): embed it "
                           f"with --views 1")
        plan = data.permutation_plan()
    return encode_views(model, data.normalised(slice(None)), data.tokens, plan, views, device,
                        batch), data, config


def embed(run: Path, zoo_path: Path, device: str = "cpu", views: int | None = None) -> dict:
    """Embeddings of every (model, epoch) sample of a zoo: latent [N, L], model [N], epoch [N]."""
    embedding, data, _ = embed_samples(run, zoo_path, device, views=views)
    data.zoo.close()
    return {"embedding": embedding, "model": data.models, "epoch": data.sample_epochs}
