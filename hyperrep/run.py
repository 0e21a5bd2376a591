"""Reading a trained run back and embedding zoos with it: every (model, epoch) state -> latent."""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hyperrep.augment import PermutationPlan
from hyperrep.data import ZooTokens, window_starts
from hyperrep.model import ModelConfig, load_autoencoder
from hyperrep.tokenise import TokenMap, tokenise
from modelzoo.errors import ZooError
from modelzoo.zoo import open_zoo


def load_run(run: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained model of a run (final weights, else the last checkpoint) and its config."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ZooError(f"{run} is not a hyperrep run: config.json is missing")
    config = json.loads((run / "config.json").read_text())
    model = load_autoencoder(ModelConfig(**config["model"]))
    if (run / "model.safetensors").exists():
        state = load_file(str(run / "model.safetensors"))
    elif (run / "checkpoint.pt").exists():
        state = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")["model"]
    else:
        raise ZooError(f"{run} has no trained weights yet")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
                 if unexpected else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, "
                 f"its config says {tuple(expected[wrong[0]].shape)}")
        raise ZooError(f"{run}: the weights do not fit the run's config.json ({first}; "
                       f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} "
                       f"of another shape)")
    model.load_state_dict(state)
    return model.to(device).eval(), config


def open_run_tokens(run: Path, zoo_path: Path,
                    device: str = "cpu") -> tuple[torch.nn.Module, ZooTokens, dict]:
    """(trained model, the zoo's samples read once and normalised as the run's, run config).

    A sane-mode run also reads zoos of other architectures whose tokens have the run's size
    (``token_size``) and whose positions fit its tables; such a zoo is normalised with the
    statistics of its own train-split models (the run's are per layer of another architecture).
    The zoo stays open as ``data.zoo``; the caller closes it.
    """
    model, config = load_run(run, device)
    train_cfg = config["train"]
    zoo = open_zoo(zoo_path)
    data = ZooTokens(zoo, model.cfg.token_size, config["zoo_epochs"]
                     if set(config["zoo_epochs"]) <= set(zoo.epochs) else None)
    # the run's own architecture: same parameter count, token count and layers (older runs
    # recorded no parameter count; their model config holds the token count)
    same_architecture = (config.get("n_params", zoo.n_params) == zoo.n_params
                         and config.get("zoo_tokens", model.cfg.n_tokens) == data.tokens.n_tokens
                         and len(config["layer_scale"]) == len(data.tokens.layer_names))
    if same_architecture:
        if train_cfg.get("canonical"):
            plan = data.permutation_plan()
            data.canonicalise(plan,
                              load_file(str(Path(run) / "reference.safetensors"))["reference"])
        data.layer_scale = torch.tensor(config["layer_scale"])
        data.layer_shift = torch.tensor(config.get("layer_shift") or
                                        [0.0] * len(config["layer_scale"]))
        return model, data, config
    problem = _foreign_zoo_problem(model, data, train_cfg)
    if problem:
        zoo.close()
        raise ZooError(f"{zoo_path}: {problem}")
    data.fit_scale(data.rows_of(zoo.split_models(train_cfg["split_seed"])["train"]),
                   train_cfg.get("standardise", False))
    return model, data, config


def _foreign_zoo_problem(model, data: ZooTokens, train_cfg: dict) -> str | None:
    """Why the run cannot embed this zoo of another architecture (None: it can)."""
    if train_cfg.get("mode") != "sane":
        return (f"architecture does not match the run's ({data.tokens.n_tokens} tokens, run has "
                f"{model.cfg.n_tokens}); only a sane-mode run embeds other architectures")
    biggest = data.tokens.positions.max(0).values.tolist()
    tables = [model.cfg.n_tokens, model.cfg.n_layers, model.cfg.max_within]
    if any(b >= t for b, t in zip(biggest, tables)):
        return (f"its positions (token, layer, index within layer) reach "
                f"{[b + 1 for b in biggest]}, the run's tables hold {tables}: train the run with "
                f"max_positions at least that large")
    return None


@torch.no_grad()
def encode_normalised(model, normalised: torch.Tensor, tokens: TokenMap, device: str = "cpu",
                      batch: int = 256) -> np.ndarray:
    """Normalised flat weights [N, P] -> embeddings float32 [N, L] ([N, layers * L] for sane runs
    with ``pooling: layers``, [N, layers * 2L] with ``layer-moments``, [N, layers * 7L] with
    ``layer-stats``).

    Compression runs trained on windows: the mean of the latents of the windows that tile each
    model. Sane runs: the token latents pooled as the run's ``pooling`` says (``pool_tokens``);
    when the model has more tokens than the trained window, each token's latent is read from a
    halo window (the token's core window plus the run's ``halo`` tokens of context each side,
    default a quarter of the window), see ``halo_windows``.
    """
    positions = tokens.positions.to(device)
    window = model.cfg.window
    latents = []
    for chunk in normalised.split(batch) if len(normalised) else ():
        view = tokenise(chunk, tokens).to(device)
        if model.cfg.mode == "sane":
            per_token = _per_token(model, model.encode, view, positions)
            latents.append(pool_tokens(per_token, tokens, model.cfg.pooling).cpu())
        elif not window:
            latents.append(model.encode(view, positions).float().cpu())
        else:
            parts = [model.encode(view[:, s:s + window], positions[s:s + window]).float()
                     for s in window_starts(tokens.n_tokens, window)]
            latents.append(torch.stack(parts).mean(0).cpu())
    if not latents:  # no states: an empty [0, embedding size], sized by pooling one blank state
        blank = torch.zeros(1, tokens.n_tokens, model.cfg.latent)
        return (pool_tokens(blank, tokens, model.cfg.pooling) if model.cfg.mode == "sane"
                else blank[:, 0])[:0].numpy()
    return torch.cat(latents).numpy()


STAT_QUANTILES = (1, 25, 50, 75, 99)  # percentiles of S(W), of weights and of token latents


def pool_tokens(per_token: torch.Tensor, tokens: TokenMap, pooling: str) -> torch.Tensor:
    """Token latents [N, T, L] -> embeddings: ``mean`` over all tokens [N, L] (the same size for
    any architecture); ``layers``: the mean over each layer's tokens, concatenated in layer
    order [N, layers * L] (the sizes of the layers no longer weigh on the embedding);
    ``layer-moments``: each layer's mean and (population) std over its tokens [N, layers * 2L];
    ``layer-stats``: S(W) of the latents, each layer's mean, std and 1/25/50/75/99th percentiles
    (linear interpolation) over its tokens, per latent dimension [N, layers * 7L]."""
    if pooling == "mean":
        return per_token.mean(1)
    layer = tokens.token_layer.to(per_token.device)
    groups = [per_token[:, layer == index] for index in layer.unique()]
    if pooling == "layers":
        return torch.cat([g.mean(1) for g in groups], 1)
    per_layer = [[g.mean(1), g.std(1, correction=0)] for g in groups]
    if pooling == "layer-stats":
        levels = torch.tensor(STAT_QUANTILES, dtype=per_token.dtype, device=per_token.device) / 100
        for parts, g in zip(per_layer, groups):
            parts += list(torch.quantile(g, levels, dim=1))  # [levels, N, L]
    return torch.cat([torch.cat(parts, 1) for parts in per_layer], 1)


def _per_token(model, apply, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Sane runs: ``apply(x, positions)`` (the model's encode or decode) for token sequences
    x [B, T, ...] -> [B, T, ...]: in one pass when they fit the trained window, else through halo
    windows with only core tokens kept."""
    n_tokens = x.shape[1]
    if model.cfg.window >= n_tokens:
        return apply(x, positions).float()
    return torch.cat([apply(x[:, lo:hi], positions[lo:hi])[:, keep].float()
                      for lo, hi, keep in halo_windows(n_tokens, model.cfg.window,
                                                       model.cfg.halo)], 1)


@torch.no_grad()
def encode_tokens(model, normalised: torch.Tensor, tokens: TokenMap, device: str = "cpu",
                  batch: int = 256) -> torch.Tensor:
    """Sane runs: normalised flat weights [N, P] -> every token's latent float32 [N, T, L]; models
    longer than the trained window are read through halo windows (``halo_windows``)."""
    positions = tokens.positions.to(device)
    out = [_per_token(model, model.encode, tokenise(chunk, tokens).to(device), positions).cpu()
           for chunk in normalised.split(batch)]
    return torch.cat(out) if out else torch.zeros(0, tokens.n_tokens, model.cfg.latent)


@torch.no_grad()
def decode_tokens(model, latents: torch.Tensor, tokens: TokenMap, device: str = "cpu",
                  batch: int = 256) -> torch.Tensor:
    """Sane runs: token latents [n, T, L] -> reconstructed tokens float32 [n, T, S]; models longer
    than the trained window are decoded through the same halo windows as they are encoded."""
    positions = tokens.positions.to(device)
    return torch.cat([_per_token(model, model.decode, chunk.to(device), positions).cpu()
                      for chunk in latents.split(batch)])


def halo_windows(n_tokens: int, window: int, halo: int | None = None) -> list[tuple[int, int, slice]]:
    """Windows of ``window`` tokens whose cores tile ``n_tokens`` exactly once: (lo, hi, keep),
    the window's tokens lo..hi-1 and, within it, the slice of core tokens whose latents count.

    Cores are ``window - 2 * halo`` tokens long; each window reaches ``halo`` tokens past its core
    on both sides, shifted inwards at the model's ends so that every window is full length.
    """
    halo = window // 4 if halo is None else halo
    core = window - 2 * halo
    if core < 1:
        raise ZooError(f"halo {halo} leaves no core in windows of {window} tokens")
    out = []
    for start in range(0, n_tokens, core):
        stop = min(start + core, n_tokens)
        lo = min(max(0, start - halo), max(0, n_tokens - window))
        hi = min(lo + window, n_tokens)
        out.append((lo, hi, slice(start - lo, stop - lo)))
    return out


EMBED_VIEWS = 16  # default views per embedding for runs trained with permutation augmentation
EMBED_SEED = 7  # seed of the permutations the views are drawn with


def default_views(config: dict) -> int:
    """Views a run's embeddings average over by default: EMBED_VIEWS where it was trained with
    permutation augmentation, else 1 (canonical runs, architectures without a permutation plan)."""
    train_cfg = config["train"]
    return EMBED_VIEWS if train_cfg["permutations"] and not train_cfg["canonical"] else 1


@torch.no_grad()
def encode_views(model: torch.nn.Module, normalised: torch.Tensor, tokens: TokenMap,
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
