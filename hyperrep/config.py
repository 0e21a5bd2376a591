"""What a hyper-representation run is trained with: ``TrainConfig`` (pydantic; ``--config`` YAML
keys, CLI flags override), read by ``load_train_config``."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from modelzoo.errors import ZooError
from modelzoo.specs import validated


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
    latent: int = 512  # chosen on the digits Hyp zoo (BENCHMARKS.md, hyper-representations)
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
    return validated(TrainConfig, data, "hyperrep config")
