"""A population of P models of one architecture run as one network of grouped layers.

The architecture's own ``forward`` runs unchanged on population arrangements of activations:

- conv activations: [B, P*C, H, W], channels model-major, channels_last in memory. Each ``Conv2d``
  becomes one convolution with ``groups=P`` over its stacked weights [P, O, C, k, k].
- after a ``Linear``: [B, P, F]. Each ``Linear`` becomes one batched matmul over [P, out, in]; its
  input may also be a flattened conv activation [B, P*F] (``flatten(1)`` keeps models apart).
- keyed dropout draws each model's mask exactly as ``KeyedDropout`` draws it for the model alone.

So the output is log-probabilities [B, P, classes]. This is only correct for forwards that keep
models apart (elementwise activations, pooling, ``flatten(1)``, spatial means): the architectures in
``GROUPED_ARCHITECTURES``, each checked against training alone in tests/test_population.py. Others
train under ``torch.func.vmap``. Grouped layers are faster than vmap on the CPU (BENCHMARKS.md),
mostly from the channels_last layout, in which oneDNN's grouped convolutions beat vmap's NCHW.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from modelzoo.models.base import KeyedDropout, keyed_keep

GROUPED_ARCHITECTURES = frozenset({"tetris_mlp", "cnn_s", "cnn_l", "unterthiner_cnn"})


class GroupedConv2d(nn.Module):
    """P convolutions as one: [B, P*C, H, W] -> [B, P*O, H', W'] with stacked weight [P, O, C, k, k]."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("grouped populations need plain convolutions (groups 1, zero padding)")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight, self.bias = weight, bias  # the population's live tensors, not copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x.contiguous(memory_format=torch.channels_last), self.weight.flatten(0, 1),
                        bias, self.stride, self.padding, self.dilation, groups=len(self.weight))


class GroupedLinear(nn.Module):
    """P linear layers as one batched matmul: [B, P*in] or [B, P, in] -> [B, P, out]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight, self.bias = weight, bias  # [P, out, in], [P, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_model = x.reshape(len(x), len(self.weight), -1).transpose(0, 1)  # [P, B, in]
        weight = self.weight.transpose(1, 2)
        out = torch.bmm(per_model, weight) if self.bias is None else \
            torch.baddbmm(self.bias.unsqueeze(1), per_model, weight)
        return out.transpose(0, 1)


class GroupedDropout(nn.Module):
    """Each model's keyed dropout on a population activation; ``key`` [P] int64, ``p`` [P]."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor, key: torch.Tensor | None = None,
                p: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or key is None:  # no key: every model's rate is 0
            return x
        n = len(key)
        flat = x.dim() != 3  # conv activations [B, P*C, ...]; after a Linear [B, P, F]
        # one model's activation shape, as KeyedDropout sees it when the model trains alone
        shape = (len(x), x.shape[1] // n, *x.shape[2:]) if flat else (len(x), x.shape[2])
        rate = p.to(x.dtype)
        keep = vmap(lambda k, r: keyed_keep(k, self.index, shape, r))(key, rate)  # [P, *shape]
        rates = rate.view(n, *([1] * len(shape))).expand(n, 1, *shape[1:])
        return x * to_population_arrangement(keep.to(x.dtype), flat) / to_population_arrangement(1.0 - rates, flat)


def to_population_arrangement(per_model: torch.Tensor, flat: bool) -> torch.Tensor:
    """[P, B, C, ...] -> [B, P*C, ...] (``flat``: conv activations and inputs) or [B, P, C, ...]."""
    moved = per_model.movedim(0, 1)
    return moved.reshape(len(moved), -1, *moved.shape[3:]) if flat else moved


def grouped_network(template: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``template`` whose layers compute all P models in ``params`` ({name: [P, ...]}).

    The network holds ``params``' tensors themselves, so in-place optimiser updates reach it.
    """
    network = copy.deepcopy(template)
    for name, module in list(network.named_modules()):
        if isinstance(module, nn.Conv2d):
            grouped = GroupedConv2d(module, params[f"{name}.weight"], params.get(f"{name}.bias"))
        elif isinstance(module, nn.Linear):
            grouped = GroupedLinear(params[f"{name}.weight"], params.get(f"{name}.bias"))
        elif isinstance(module, KeyedDropout):
            grouped = GroupedDropout(module.index)
        else:
            if any(True for _ in module.parameters(recurse=False)):
                raise ValueError(f"no grouped form of {type(module).__name__} ({name})")
            continue
        network.set_submodule(name, grouped)
    return network


def shared_inputs(x: torch.Tensor, n_models: int) -> torch.Tensor:
    """One input batch [B, C, ...] seen by every model -> the population input [B, P*C, ...]."""
    return x.repeat(1, n_models, *([1] * (x.dim() - 2)))
