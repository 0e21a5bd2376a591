"""Augmentations of weights: function-preserving permutations, random erasing, Gaussian noise.

Permutations reorder the hidden units of a layer (rows of its weight and bias) and, consistently,
the matching inputs of the next layer: for a conv followed by flatten, the linear layer's input
columns move block by block (one block of H*W columns per channel); after global average pooling, one
column per channel. Activations, max-pooling and dropout act per channel, so the network computes the
same function. A ``PermutationPlan`` lists permutation groups per architecture: (producer,
consumer, block) links for the plain networks; for ResNet-18 the units inside each block and the
channels of each stage's residual stream, with BatchNorm parameters and statistics moved along.
"""

import torch

from modelzoo.archive.layout import Layout
from modelzoo.errors import ZooError

# (producer module, consumer module, input columns per producer unit)
PERMUTATION_LINKS: dict[str, list[tuple[str, str, int]]] = {
    "tetris_mlp": [("fc1", "fc2", 1)],
    "cnn_s": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc1", 9), ("fc1", "fc2", 1)],
    "cnn_l": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc1", 4), ("fc1", "fc2", 1)],
    "unterthiner_cnn": [("conv1", "conv2", 1), ("conv2", "conv3", 1), ("conv3", "fc", 1)],
}


class Group:
    """One permutation shared by ``producers`` (modules whose output units are permuted: every
    tensor of the module along dim 0, so BatchNorm scale, shift and running statistics move with
    their channel) and ``consumers`` ((module, input columns per unit): whose inputs follow)."""

    def __init__(self, producers: list[str], consumers: list[tuple[str, int]]):
        self.producers, self.consumers = producers, consumers


def resnet18_groups() -> list[Group]:
    """ResNet-18 (modelzoo's CIFAR-style ``resnet18``): inside each basic block conv1 / bn1 -> conv2
    freely; every stage's residual stream (the stem or the first block's shortcut, and each block's
    conv2 / bn2, which are added to it) shares one permutation, followed by the next blocks' conv1,
    the next stage's conv1 and shortcut, or the classifier."""
    groups, stream = [], ["conv1", "bn1"]
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    for i, block in enumerate(blocks):
        groups.append(Group([f"{block}.conv1", f"{block}.bn1"], [(f"{block}.conv2", 1)]))
        first_of_stage = block.endswith(".0") and block != "layer1.0"
        if first_of_stage:  # a new stream begins at the projection shortcut
            stream = [f"{block}.shortcut.0", f"{block}.shortcut.1"]
        stream += [f"{block}.conv2", f"{block}.bn2"]
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if following is None or following.endswith(".0"):  # the stream ends with this stage
            stage = block.split(".")[0]
            consumers = [(f"{b}.conv1", 1) for b in blocks if b.startswith(stage + ".")]
            consumers = [c for c in consumers if c[0] != f"{stage}.0.conv1" or stage == "layer1"]
            if following is None:
                consumers.append(("fc", 1))
            else:
                consumers += [(f"{following}.conv1", 1), (f"{following}.shortcut.0", 1)]
            groups.append(Group(stream, consumers))
    return groups


PERMUTATION_GROUPS: dict[str, list[Group]] = {
    arch: [Group([p], [(c, b)]) for p, c, b in links] for arch, links in PERMUTATION_LINKS.items()
}
PERMUTATION_GROUPS["resnet18"] = resnet18_groups()


class PermutationPlan:
    """Draws function-preserving permutations of an architecture as flat-vector gather indices."""

    def __init__(self, arch: str, layout: Layout):
        if arch not in PERMUTATION_GROUPS:
            raise ZooError(f"permutation augmentation is not defined for {arch!r} "
                           f"(defined: {sorted(PERMUTATION_GROUPS)})")
        self.layout = layout
        self.entries = {e.name: e for e in layout.entries}
        self.groups = PERMUTATION_GROUPS[arch]

    def _view(self, name: str) -> torch.Tensor | None:
        entry = self.entries.get(name)
        if entry is None:
            return None
        return torch.arange(entry.offset, entry.offset + entry.size).view(entry.shape)

    def _producer_views(self, group: Group) -> list[torch.Tensor]:
        """Flat indices [units, k] of every tensor of the group's producers."""
        return [self._view(e.name).reshape(e.shape[0], -1) for module in group.producers
                for e in self.layout.entries if e.name.rsplit(".", 1)[0] == module]

    def _consumer_views(self, group: Group, units: int) -> list[torch.Tensor]:
        """Flat indices [out, units, rest] of every consumer weight's input columns."""
        views = []
        for module, block in group.consumers:
            weight = self._view(f"{module}.weight")
            views.append(weight.reshape(weight.shape[0], units, block, -1)
                         .reshape(weight.shape[0], units, -1))
        return views

    def unit_counts(self) -> list[int]:
        """Number of permutable units of each group."""
        return [self.entries[f"{g.producers[0]}.weight"].shape[0] for g in self.groups]

    def gather_index(self, perms: list[torch.Tensor]) -> torch.Tensor:
        """Gather index int64 [P] that puts unit ``perms[g][i]`` of group g at position i."""
        index = torch.arange(self.layout.size)
        for group, perm in zip(self.groups, perms):
            for view in self._producer_views(group):
                index[view.reshape(-1)] = index[view[perm].reshape(-1)]
            for cols in self._consumer_views(group, len(perm)):
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
        """Everything of group ``link``'s producer units (weights, biases, norms): [N, units, k]."""
        return torch.cat([flat[:, view] for view in self._producer_views(self.groups[link])],
                         dim=2)

    def consumer_columns(self, flat: torch.Tensor, link: int) -> torch.Tensor:
        """Outgoing weights of group ``link``'s units (consumer columns): [N, units, k]."""
        units = self.unit_counts()[link]
        views = self._consumer_views(self.groups[link], units)
        return torch.cat([flat[:, v.transpose(0, 1).reshape(units, -1)] for v in views], dim=2)


def random_erase(tokens: torch.Tensor, mask: torch.Tensor, p: float = 0.5,
                 scale: tuple[float, float] = (0.02, 0.33),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per sample, zero a contiguous block of 2-33 % of the (real) values.
    Drawn on the tokens' device (``generator`` must live there)."""
    n, device = tokens.shape[0], tokens.device
    flat = tokens.reshape(n, -1).clone()
    length = flat.shape[1]
    apply = torch.rand(n, generator=generator, device=device) < p
    frac = torch.empty(n, device=device).uniform_(*scale, generator=generator)
    sizes = (frac * length).long().clamp_min(1)
    starts = (torch.rand(n, generator=generator, device=device) * (length - sizes + 1)).long()
    pos = torch.arange(length, device=device)
    erase = (pos >= starts[:, None]) & (pos < (starts + sizes)[:, None]) & apply[:, None]
    flat = flat.masked_fill(erase, 0.0)
    return flat.view_as(tokens) * mask


def add_noise(tokens: torch.Tensor, mask: torch.Tensor, sigma: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma`` on the real (unpadded) values, drawn on the tokens'
    device (``generator`` must live there)."""
    if sigma <= 0:
        return tokens
    noise = torch.randn(tokens.shape, generator=generator, device=tokens.device)
    return tokens + sigma * noise * mask
