"""A zoo as hyper-representation training data: its (model, epoch) samples as flat weights with
the layer-wise normalisation, the token map, augmented views and windows."""

import numpy as np
import torch

from hyperrep.augment import PermutationPlan, add_noise, random_erase
from hyperrep.canonical import match_to_reference
from hyperrep.config import TrainConfig
from hyperrep.tokenise import TokenMap, build_token_map, tokenise
from modelzoo.zoo import Zoo


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
        # an imported zoo may hold NaN states (a step its source lacks, a diverged run): such a
        # model is left out whole, so every model keeps all its epochs
        usable = torch.isfinite(weights).flatten(1).all(1).numpy()
        self.left_out = [m for m, ok in zip(zoo.model_ids, usable) if not ok]
        weights = weights[torch.from_numpy(usable)]
        self.flat = weights.reshape(-1, zoo.n_params)
        self.models = np.repeat(np.asarray(zoo.model_ids)[usable], len(self.epochs))
        self.sample_epochs = np.tile(self.epochs, int(usable.sum()))
        self.layer_scale: torch.Tensor | None = None  # [layers], set by fit_scale
        self.layer_shift: torch.Tensor | None = None
        self.plan: PermutationPlan | None = None
        self.reference: torch.Tensor | None = None  # set by canonicalise

    def permutation_plan(self) -> PermutationPlan:
        """The function-preserving permutations of this zoo's architecture."""
        return PermutationPlan(self.zoo.manifest.architecture, self.zoo.layout)

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

    def fit_scale(self, rows: np.ndarray, standardise: bool = False) -> None:
        """Per-layer std of the training samples' weights (the layer-wise normalisation) and,
        with ``standardise``, their per-layer mean (subtracted first)."""
        flat = self.flat[rows]
        n_layers = len(self.tokens.layer_names)
        scale, shift = torch.ones(n_layers), torch.zeros(n_layers)
        for layer in range(n_layers):
            values = flat[:, self.param_layer == layer]
            scale[layer] = values.std().clamp_min(1e-8) if values.numel() > 1 else 1.0
            if standardise and values.numel():
                shift[layer] = values.mean()
        self.layer_scale, self.layer_shift = scale, shift

    def normalised(self, rows: np.ndarray | slice) -> torch.Tensor:
        return self.normalise(self.flat[rows])

    def normalise(self, flat: torch.Tensor) -> torch.Tensor:
        """States in the zoo's units [N, P] -> the run's normalised units."""
        return (flat - self.layer_shift[self.param_layer]) / self.layer_scale[self.param_layer]

    def denormalise(self, normalised: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalise``."""
        return normalised * self.layer_scale[self.param_layer] + self.layer_shift[self.param_layer]

    def rows_of(self, models: np.ndarray) -> np.ndarray:
        return np.nonzero(np.isin(self.models, models))[0]


def make_views(flat: torch.Tensor, tokens: TokenMap, perms: torch.Tensor, cfg: TrainConfig,
               generator: torch.Generator,
               device_generator: torch.Generator | None = None) -> torch.Tensor:
    """One augmented view per sample: permute -> tokenise -> noise -> erase. [B, T, S] on the
    device of ``tokens``.

    ``flat`` [B, P] and ``perms`` stay where they are (the host: a zoo's permutation pool can be
    large) and the permutation is drawn from ``generator`` there; the permuted batch then moves
    to ``tokens``' device, where noise and erasing are drawn from ``device_generator`` (default
    ``generator``, whose device must then be that one).
    """
    if len(perms):
        choice = torch.randint(len(perms), (len(flat),), generator=generator)
        flat = torch.gather(flat, 1, perms[choice])
    view = tokenise(flat.to(tokens.index.device, non_blocking=True), tokens)
    if device_generator is None:
        device_generator = generator
    view = add_noise(view, tokens.mask, cfg.noise, device_generator)
    return random_erase(view, tokens.mask, cfg.erase_p, generator=device_generator)


def window_of(cfg: TrainConfig, tokens: TokenMap) -> int:
    """Tokens per window (0: whole models)."""
    return 0 if cfg.window is None or cfg.window >= tokens.n_tokens else cfg.window


def window_starts(n_tokens: int, window: int) -> list[int]:
    """Starts of the windows that tile a model (the last one flush with its end)."""
    starts = list(range(0, n_tokens - window + 1, window))
    return starts if starts[-1] + window == n_tokens else starts + [n_tokens - window]
