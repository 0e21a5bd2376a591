"""Augmentations of weights: function-preserving permutations, random erasing, Gaussian noise.

Permutations reorder the hidden units of a layer (rows of its weight and bias) and, consistently,
the matching inputs of the next layer: for a conv followed by flatten, the linear layer's input
columns move block by block (one block of H*W columns per channel); after global average pooling, one
column per channel. Activations, max-pooling and dropout act per channel, so the network computes the
same function. A ``PermutationPlan`` lists (producer, consumer, block) links per architecture.
"""

import torch

from modelzoo.errors import ZooError
from modelzoo.layout import Layout

# (producer module, consumer module, input columns per producer unit)
PERMUTATION_LINKS: dict[str, list[tuple[str, str, int]]] = {
    "tetris_mlp": [("fc1", "fc2", 1)],
    "cnn_s": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc1", 9), ("fc1", "fc2", 1)],
    "cnn_l": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc1", 4), ("fc1", "fc2", 1)],
    "unterthiner_cnn": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc", 1)],
}


class PermutationPlan:
    """Draws function-preserving permutations of an architecture as flat-vector gather indices."""

    def __init__(self, arch: str, layout: Layout):
        if arch not in PERMUTATION_LINKS:
            raise ZooError(f"permutation augmentation is not defined for {arch!r} "
                           f"(defined: {sorted(PERMUTATION_LINKS)})")
        self.layout = layout
        self.entries = {e.name: e for e in layout.entries}
        self.links = PERMUTATION_LINKS[arch]

    def _view(self, name: str) -> torch.Tensor | None:
        entry = self.entries.get(name)
        if entry is None:
            return None
        return torch.arange(entry.offset, entry.offset + entry.size).view(entry.shape)

    def unit_counts(self) -> list[int]:
        """Number of permutable units of each link's producer."""
        return [self.entries[f"{producer}.weight"].shape[0] for producer, _, _ in self.links]

    def gather_index(self, perms: list[torch.Tensor]) -> torch.Tensor:
        """Gather index int64 [P] that puts unit ``perms[l][i]`` of link l's producer at position i."""
        index = torch.arange(self.layout.size)
        for (producer, consumer, block), perm in zip(self.links, perms):
            units = len(perm)
            for name in (f"{producer}.weight", f"{producer}.bias"):
                view = self._view(name)
                if view is not None:
                    index[view.reshape(units, -1).reshape(-1)] = index[view[perm].reshape(-1)]
            cons = self._view(f"{consumer}.weight")
            cols = cons.reshape(cons.shape[0], units, block, -1)
            index[cols.reshape(-1)] = index[cols[:, perm].reshape(-1)]
        return index

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random permutations as gather indices int64 [n, P]: ``flat[:, idx]`` permutes."""
        counts = self.unit_counts()
        if n == 0:
            return torch.zeros((0, self.layout.size), dtype=torch.int64)
        return torch.stack([self.gather_index([torch.randperm(units, generator=generator)
                                               for units in counts]) for _ in range(n)])

    def producer_rows(self, flat: torch.Tensor, link: int) -> torch.Tensor:
        """Incoming weights (and bias) of link ``link``'s producer units: [N, units, fan_in + 1]."""
        producer = self.links[link][0]
        weight = self._view(f"{producer}.weight")
        parts = [flat[:, weight.reshape(weight.shape[0], -1)]]
        bias = self._view(f"{producer}.bias")
        if bias is not None:
            parts.append(flat[:, bias.reshape(-1, 1)])
        return torch.cat(parts, dim=2)

    def consumer_columns(self, flat: torch.Tensor, link: int) -> torch.Tensor:
        """Outgoing weights of link ``link``'s producer units (consumer columns): [N, units, k]."""
        _, consumer, block = self.links[link]
        cons = self._view(f"{consumer}.weight")
        units = self.unit_counts()[link]
        cols = cons.reshape(cons.shape[0], units, block, -1).transpose(0, 1).reshape(units, -1)
        return flat[:, cols]


def random_erase(tokens: torch.Tensor, mask: torch.Tensor, p: float = 0.5,
                 scale: tuple[float, float] = (0.02, 0.33),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per sample, zero a contiguous block of 2-33 % of the (real) values."""
    n = tokens.shape[0]
    flat = tokens.reshape(n, -1).clone()
    length = flat.shape[1]
    apply = torch.rand(n, generator=generator) < p
    frac = torch.empty(n).uniform_(*scale, generator=generator)
    sizes = (frac * length).long().clamp_min(1)
    starts = (torch.rand(n, generator=generator) * (length - sizes + 1)).long()
    pos = torch.arange(length)
    erase = (pos >= starts[:, None]) & (pos < (starts + sizes)[:, None]) & apply[:, None]
    flat = flat.masked_fill(erase.to(flat.device), 0.0)
    return flat.view_as(tokens) * mask


def add_noise(tokens: torch.Tensor, mask: torch.Tensor, sigma: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma`` on the real (unpadded) values."""
    if sigma <= 0:
        return tokens
    noise = torch.randn(tokens.shape, generator=generator).to(tokens.device)
    return tokens + sigma * noise * mask
