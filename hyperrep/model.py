"""Transformer autoencoders over weight tokens, in the two designs of ``hyperrep.config``.

``HyperRepresentation`` (mode compression): tokens [B, T, S] (S = token size) -> latent [B, L] in
(-1, 1) through a compression token -> reconstruction [B, T, S]; projection head: latent ->
[B, proj_dim] for the contrastive loss. With ``window`` W > 0 it works on windows of W
consecutive tokens (positions [B, W, 3] say where each window lies), so its size does not grow
with the zoo model's; a model's embedding is then the mean over its windows.

``SaneAutoencoder`` (mode sane): tokens [B, T, S] -> token latents [B, T, L] -> reconstruction
[B, T, S]; the projection head reads a window's token latents flattened [B, T * L]; a model's
embedding is the mean of its token latents [B, L]. Both classes offer ``encode``, ``decode`` and
``forward`` -> (latent, reconstruction, projection); ``hyperrep.run`` embeds with them.
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn

from hyperrep.config import TrainConfig
from hyperrep.tokenise import TokenMap
from modelzoo.errors import ZooError

MAX_DECODER_INPUT = 300_000_000  # parameters of the latent -> all-tokens projection we allow


@dataclass
class ModelConfig:
    """Sizes of the autoencoder; the defaults users set live in ``hyperrep.config.TrainConfig``."""

    n_tokens: int
    token_size: int
    n_layers: int  # layers of the zoo architecture (for layer position embeddings)
    max_within: int  # largest token index within one layer + 1
    d_model: int
    heads: int
    encoder_blocks: int
    decoder_blocks: int
    latent: int
    proj_dim: int
    dropout: float = 0.0
    window: int = 0  # tokens per window (0: whole models)
    mode: str = "compression"
    halo: int | None = None  # sane: context tokens each side of a halo window (None: window // 4)
    pooling: str = "mean"  # sane: embedding = mean of the token latents, or their mean per layer

    @property
    def decoded_tokens(self) -> int:
        return self.window or self.n_tokens

    def to_dict(self) -> dict:
        return asdict(self)


class Positions(nn.Module):
    """Sum of learned embeddings of (token index, layer index, index within layer).

    Initialised small (std 0.02): at the default std 1 the three position vectors outweigh a
    token's embedded weights about threefold, and the pre-norm blocks then see mostly positions
    (the effect on the probes: BENCHMARKS.md, hyper-representations).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.n_tokens, cfg.d_model)
        self.layer = nn.Embedding(cfg.n_layers, cfg.d_model)
        self.within = nn.Embedding(cfg.max_within, cfg.d_model)
        for table in (self.token, self.layer, self.within):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # [..., 3] -> [..., d]
        return self.token(positions[..., 0]) + self.layer(positions[..., 1]) + \
            self.within(positions[..., 2])


def blocks(cfg: ModelConfig, n: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)


class HyperRepresentation(nn.Module):
    """Encoder (tokens -> latent), decoder (latent -> tokens) and projection head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.token_size, cfg.d_model)
        self.positions = Positions(cfg)
        self.compression = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.encoder = blocks(cfg, cfg.encoder_blocks)
        self.to_latent = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.latent),
                                       nn.Tanh())
        self.from_latent = nn.Linear(cfg.latent, cfg.decoded_tokens * cfg.d_model)
        self.decoder = blocks(cfg, cfg.decoder_blocks)
        self.debed = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.token_size))
        self.head = nn.Sequential(nn.Linear(cfg.latent, cfg.latent), nn.BatchNorm1d(cfg.latent),
                                  nn.ReLU(), nn.Linear(cfg.latent, cfg.latent),
                                  nn.BatchNorm1d(cfg.latent), nn.ReLU(),
                                  nn.Linear(cfg.latent, cfg.proj_dim))

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S] (positions [T, 3] or [B, T, 3]) -> latent [B, L]."""
        x = self.embed(tokens) + self.positions(positions)
        x = torch.cat([self.compression.expand(len(x), -1, -1), x], dim=1)
        return self.to_latent(self.encoder(x)[:, 0])

    def decode(self, latent: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """latent [B, L] -> tokens [B, T, S] (T = window when windowed)."""
        x = self.from_latent(latent).view(len(latent), self.cfg.decoded_tokens, self.cfg.d_model)
        return self.debed(self.decoder(x + self.positions(positions)))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor):
        """(latent [B, L], reconstruction [B, T, S], projection [B, proj_dim])."""
        latent = self.encode(tokens, positions)
        return latent, self.decode(latent, positions), self.head(latent)


class SaneAutoencoder(nn.Module):
    """Per-token latents (SANE): encoder (tokens -> token latents), decoder (token latents ->
    tokens) and a projection head over a window's token latents."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.token_size, cfg.d_model)
        self.positions = Positions(cfg)
        self.encoder = blocks(cfg, cfg.encoder_blocks)
        self.to_latent = nn.Linear(cfg.d_model, cfg.latent)
        self.from_latent = nn.Linear(cfg.latent, cfg.d_model)
        self.decoder = blocks(cfg, cfg.decoder_blocks)
        self.debed = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.token_size))
        self.head = nn.Sequential(nn.Linear(cfg.window * cfg.latent, cfg.proj_dim, bias=False),
                                  nn.LayerNorm(cfg.proj_dim), nn.ReLU(),
                                  nn.Linear(cfg.proj_dim, cfg.proj_dim, bias=False),
                                  nn.LayerNorm(cfg.proj_dim), nn.ReLU())

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, S] (positions [T, 3] or [B, T, 3]) -> token latents [B, T, L]."""
        return self.to_latent(self.encoder(self.embed(tokens) + self.positions(positions)))

    def decode(self, latent: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """token latents [B, T, L] -> tokens [B, T, S]."""
        return self.debed(self.decoder(self.from_latent(latent) + self.positions(positions)))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor):
        """(token latents [B, T, L], reconstruction [B, T, S], projection [B, proj_dim]); T must
        be the trained window (whole models: their token count)."""
        latent = self.encode(tokens, positions)
        return latent, self.decode(latent, positions), self.head(latent.flatten(1))


def load_autoencoder(cfg: ModelConfig) -> nn.Module:
    """The (untrained) autoencoder class of a model config."""
    return SaneAutoencoder(cfg) if cfg.mode == "sane" else HyperRepresentation(cfg)


def build_autoencoder(cfg: TrainConfig, tokens: TokenMap) -> nn.Module:
    """The untrained autoencoder of a run for a zoo with this token map."""
    window = 0 if cfg.window is None or cfg.window >= tokens.n_tokens else cfg.window
    tables = (tokens.n_tokens, len(tokens.layer_names), int(tokens.positions[:, 2].max()) + 1)
    sane = cfg.mode == "sane"
    if sane:
        window = window or tokens.n_tokens  # the projection head reads one window's tokens
        if cfg.max_positions is not None:
            tables = tuple(max(a, b) for a, b in zip(tables, cfg.max_positions))
    else:
        size = (window or tokens.n_tokens) * cfg.d_model * cfg.latent
        if size > MAX_DECODER_INPUT:
            raise ZooError(f"this zoo's models have {tokens.n_tokens:,} tokens: the decoder's "
                           f"latent -> tokens projection would hold {size:,} parameters (latent "
                           f"{cfg.latent} x d_model {cfg.d_model} x tokens); set window (tokens "
                           f"per window, e.g. 256) or lower latent / d_model")
    model_cfg = ModelConfig(n_tokens=tables[0], token_size=tokens.token_size, n_layers=tables[1],
                            max_within=tables[2], d_model=cfg.d_model, heads=cfg.heads,
                            encoder_blocks=cfg.encoder_blocks, decoder_blocks=cfg.decoder_blocks,
                            latent=cfg.latent, proj_dim=cfg.proj_dim, window=window,
                            mode=cfg.mode, halo=cfg.halo if sane else None, pooling=cfg.pooling)
    return load_autoencoder(model_cfg)
