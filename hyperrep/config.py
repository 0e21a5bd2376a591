"""What a hyper-representation run is trained with: ``TrainConfig`` (pydantic; ``--config`` YAML
keys, CLI flags override), read by ``load_train_config``.

Two designs (``mode``):
- ``sane`` (SANE, ICML 2024; the default, chosen on validation, BENCHMARKS.md): every token gets
  its own latent (no tanh); tokens as long as the longest row, per-layer standardised weights,
  AdamW with a OneCycle schedule, no erasing (``SANE_DEFAULTS``, the values of unset keys in this
  mode). A model's embedding is read from its token latents (``pooling``): by default S(W) of
  them per layer (``layer-stats``); ``mean`` pooling embeds models of any size or architecture
  with the same token size into one space.
- ``compression`` (the 2021/2022 papers): a compression token reads the encoded tokens into one
  latent vector per model (tanh), decoded back to all tokens; tokens are split to ``token_size``.
  The field defaults below are this mode's.
"""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelzoo.errors import ZooError
from modelzoo.specs import validated

SANE_DEFAULTS = {"token_size": None, "latent": 128, "standardise": True, "optimizer": "adamw",
                 "schedule": "onecycle", "erase_p": 0.0, "proj_dim": 30, "pooling": "layer-stats"}


class TrainConfig(BaseModel):
    """Everything a run is trained with (``--config`` YAML keys; CLI flags override)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["compression", "sane"] = "sane"  # chosen on validation (BENCHMARKS.md)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = 5e-4  # the peak rate with the OneCycle schedule
    weight_decay: float = 1e-9
    optimizer: Literal["adam", "adamw"] = "adam"
    schedule: Literal["constant", "onecycle"] = "constant"
    gamma: float = 0.05  # 1: contrastive only (E_c), 0: reconstruction only (E_D); 0.05 as in 2024
    temperature: float = 0.1
    noise: float = 0.05
    erase_p: float = 0.5
    permutations: int = Field(500, ge=0)  # random function-preserving permutations drawn from (0: none)
    canonical: bool = False  # align every model to one reference by weight matching first
    standardise: bool = False  # per-layer mean subtracted too (always divided by the layer's std)
    zoo_epochs: list[int] | None = None  # stored epochs used as samples; default: all but 0
    token_size: int | None = 64  # None: the longest row (no row split)
    d_model: int = 128
    heads: int = 4
    encoder_blocks: int = 2
    decoder_blocks: int = 2
    latent: int = 512  # per model (compression) or per token (sane); chosen on the digits Hyp zoo
    window: int | None = Field(None, ge=2)  # tokens per window for large models (None: whole)
    windows_per_model: int = Field(1, ge=1)  # random windows of each model per epoch
    halo: int | None = Field(None, ge=0)  # sane: context tokens each side when embedding windows
    # sane: sizes of the position tables (token index, layer, index within layer); larger than
    # the training zoo's lets one run embed zoos of larger models (positions it never saw stay
    # near their small initial values)
    max_positions: tuple[int, int, int] | None = None
    proj_dim: int = 32
    # sane: a model's embedding from its token latents (default layer-stats, SANE_DEFAULTS): their
    # mean ([L], any architecture), the mean per layer, concatenated ([layers * L], one
    # architecture), the mean and the std per layer ([layers * 2L]), or S(W) of the latents: mean,
    # std and 5 percentiles per layer ([layers * 7L]); a readout, not a training setting: a
    # finished run may be re-read with another
    pooling: Literal["mean", "layers", "layer-moments", "layer-stats"] = "mean"
    split_seed: int = 0
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _sane_defaults(cls, data):
        if isinstance(data, dict) and data.get("mode", "sane") == "sane":
            data = {**SANE_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _pooling_needs_token_latents(self):
        if self.pooling != "mean" and self.mode != "sane":
            raise ValueError(f"pooling: {self.pooling} pools token latents: it needs mode: sane")
        return self


def load_train_config(path: Path | None, overrides: dict) -> TrainConfig:
    data = {}
    if path is not None:
        if not Path(path).is_file():
            raise ZooError(f"--config {path} does not exist")
        data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validated(TrainConfig, data, "hyperrep config")
