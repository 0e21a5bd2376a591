"""Reading a trained run back and embedding zoos with it: every (model, epoch) state -> latent."""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hyperrep.augment import PermutationPlan
from hyperrep.data import ZooTokens, window_starts
from hyperrep.model import HyperRepresentation, ModelConfig
from hyperrep.tokenise import TokenMap, tokenise
from modelzoo.errors import ZooError
from modelzoo.zoo import open_zoo


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
