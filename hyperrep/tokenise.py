"""Tokenised weights: one token per output neuron / kernel / BatchNorm channel.

A row is everything attached to one output unit of a module: its incoming weights flattened, then its
bias, then (for BatchNorm) its scale, shift and running statistics. Rows longer than ``token_size``
are split; every token is zero-padded to ``token_size`` with a mask. Each token carries its position
as (global token index, layer index, index within the layer). The map is a fixed gather index into the
flat weight vector, so tokenise and detokenise are exact inverses and run vectorised for a batch.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch

from modelzoo.archive.layout import Layout


@dataclass
class TokenMap:
    """index [T, S] int64 into the flat vector (-1 = padding), mask [T, S] bool, positions [T, 3]."""

    index: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    layer_names: list[str]

    @property
    def n_tokens(self) -> int:
        return self.index.shape[0]

    @property
    def token_size(self) -> int:
        return self.index.shape[1]

    @property
    def token_layer(self) -> torch.Tensor:
        """Layer index of each token [T]."""
        return self.positions[:, 1]

    def to(self, device: torch.device | str) -> "TokenMap":
        """The same map with its tensors on ``device``."""
        return TokenMap(self.index.to(device), self.mask.to(device), self.positions.to(device),
                        self.layer_names)


def module_rows(layout: Layout) -> "OrderedDict[str, list[torch.Tensor]]":
    """Per module (name prefix), the flat-vector indices of each of its rows, in layout order.

    A row is one output unit: index 0 of every tensor of the module. A tensor whose units sit on
    dim 1 instead (a transposed convolution's weight [in, out, k, k]) is read along dim 1; one
    that fits neither (a position embedding [1, N, D] beside other tensors) becomes its own layer.
    """
    units: dict[str, int] = {}  # output units per module: its 1-D tensors' length, else dim 0
    for entry in layout.entries:
        module = entry.name.rsplit(".", 1)[0]
        if len(entry.shape) == 1 or module not in units:
            units[module] = entry.shape[0] if entry.shape else 1
    modules: "OrderedDict[str, list]" = OrderedDict()
    for entry in layout.entries:
        module = entry.name.rsplit(".", 1)[0]
        flat = torch.arange(entry.offset, entry.offset + entry.size)
        rows = units[module]
        if not entry.shape:
            ids = flat.view(1, 1)
        elif entry.shape[0] == rows:
            ids = flat.view(rows, -1)
        elif len(entry.shape) > 1 and entry.shape[1] == rows:
            ids = flat.view(entry.shape).transpose(0, 1).reshape(rows, -1)
        else:
            module, ids = entry.name, flat.view(entry.shape[0], -1)
        modules.setdefault(module, []).append(ids)
    return OrderedDict((name, [torch.cat([p[r] for p in parts]) for r in range(parts[0].shape[0])])
                       for name, parts in modules.items())


def build_token_map(layout: Layout, token_size: int | None = None) -> TokenMap:
    """The token map of an architecture's layout; ``token_size`` defaults to the longest row."""
    modules = module_rows(layout)
    longest = max(len(row) for rows in modules.values() for row in rows)
    size = token_size or longest
    index, positions = [], []
    for layer, rows in enumerate(modules.values()):
        within = 0
        for row in rows:
            for start in range(0, len(row), size):
                piece = row[start:start + size]
                padded = torch.full((size,), -1, dtype=torch.int64)
                padded[:len(piece)] = piece
                index.append(padded)
                positions.append((len(positions), layer, within))
                within += 1
    index = torch.stack(index)
    return TokenMap(index, index >= 0, torch.tensor(positions, dtype=torch.int64),
                    list(modules))


def tokenise(flat: torch.Tensor, tokens: TokenMap) -> torch.Tensor:
    """Flat weights [N, P] -> tokens [N, T, S] (padding = 0)."""
    gathered = flat[:, tokens.index.clamp_min(0).view(-1)].view(len(flat), *tokens.index.shape)
    return gathered * tokens.mask


def detokenise(tokens_: torch.Tensor, tokens: TokenMap, n_params: int) -> torch.Tensor:
    """Tokens [N, T, S] -> flat weights [N, P]; the exact inverse of ``tokenise``."""
    flat = tokens_.new_zeros(len(tokens_), n_params)
    flat[:, tokens.index[tokens.mask]] = tokens_[:, tokens.mask]
    return flat
