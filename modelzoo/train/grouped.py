"""A population of P models of one architecture run as one network of grouped layers.

The architecture's own ``forward`` runs unchanged on population arrangements of activations:

- conv activations: [B, P*C, H, W], channels model-major, in ``conv_layout``'s memory format.
  Each ``Conv2d`` becomes one convolution with ``groups=P`` over stacked weights [P, O, C, k, k].
- after a ``Linear``: [B, P, F]. Each ``Linear`` becomes one batched matmul over [P, out, in]; its
  input may also be a flattened conv activation [B, P*F] (``flatten(1)`` keeps models apart).
- keyed dropout draws each model's mask exactly as ``KeyedDropout`` draws it for the model alone.
- evaluation feeds one input [B, C, ...] to all P models: the first layer reads it once (a conv as
  one matrix product over P*O filters, a Linear as a broadcast view) instead of P copies;
  ``shared_input_network`` also fuses a first conv with its 2x2 max pool (``SharedConvPool``).

So the output is log-probabilities [B, P, classes]. This is only correct for forwards that keep
models apart (elementwise activations, pooling, ``flatten(1)``, spatial means): the architectures in
``GROUPED_ARCHITECTURES``, each checked against training alone in tests/test_population.py. Others
train under ``torch.func.vmap``. Grouped layers are faster than vmap on the CPU (BENCHMARKS.md),
mostly from the channels_last layout, in which oneDNN's grouped convolutions beat vmap's NCHW.
"""

import copy
import os

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from modelzoo.errors import ZooError
from modelzoo.models.base import KeyedDropout, keyed_keep
from modelzoo.train.cores import alone

GROUPED_ARCHITECTURES = frozenset({"tetris_mlp", "cnn_s", "cnn_l", "unterthiner_cnn"})
# How a GroupedConv2d convolves per-model inputs [B, P*C, H, W] (a shared input is always one
# matrix product): "grouped", one convolution with groups=P (oneDNN on a CPU, cuDNN on a GPU;
# with one input channel per model PyTorch runs it as a depthwise kernel on a GPU); "unfold",
# each model's patches x its filters in one batched matmul; "depthwise", one depthwise
# convolution of every input channel summed over each model's channels (one channel: grouped);
# "unfold-multichannel", unfold where a model's input has several channels, else grouped. All
# but the first are GPU options, aimed at cuDNN's one-group-at-a-time kernels (BENCHMARKS.md).
CONV_KERNELS = ("grouped", "unfold", "depthwise", "unfold-multichannel")
CONV_KERNELS_ENV = "MODELZOO_CONV_KERNELS"  # overrides the default (``conv_kernels``)


class GroupedConv2d(nn.Module):
    """P convolutions as one: [B, P*C, H, W] -> [B, P*O, H', W'] with stacked weight
    [P, O, C, k, k]."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
                 memory_format: torch.memory_format = torch.channels_last,
                 kernels: str = "grouped"):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("grouped populations need plain convolutions (groups 1, zero padding "
                             "given as numbers)")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight, self.bias = weight, bias  # the population's live tensors, not copies
        self.memory_format = memory_format
        if kernels not in CONV_KERNELS:
            raise ValueError(f"conv kernels {kernels!r}: choose from {', '.join(CONV_KERNELS)}")
        self.kernels = kernels  # how per-model inputs are convolved: see CONV_KERNELS

    def out_size(self, height: int, width: int) -> list[int]:
        """[H', W'] of the convolution of a [.., height, width] input."""
        return [(size + 2 * pad - dil * (k - 1) - 1) // stride + 1 for size, pad, dil, k, stride
                in zip((height, width), self.padding, self.dilation, self.weight.shape[-2:],
                       self.stride)]

    def shares(self, x: torch.Tensor) -> bool:
        """True when ``x`` is one input [B, C, H, W] for every model, not [B, P*C, H, W]."""
        return len(self.weight) > 1 and x.shape[1] == self.weight.shape[2]

    def filter_matrix(self) -> torch.Tensor:
        """Every model's filters as columns: [C*k*k, P*O]."""
        return self.weight.flatten(0, 1).flatten(1).t()

    def activation(self, rows: torch.Tensor, batch: int, out_hw: list[int]) -> torch.Tensor:
        """Output rows [B*H'*W', P*O] (channels_last order) as the activation [B, P*O, H', W'] in
        ``memory_format`` (a copy only where that is NCHW)."""
        return rows.view(batch, *out_hw, -1).permute(0, 3, 1, 2).contiguous(
            memory_format=self.memory_format)

    def patch_view(self, x: torch.Tensor, out_hw: list[int] | None = None,
                   stride: tuple[int, int] | None = None, shifts: int = 1) -> torch.Tensor:
        """The convolution patches of ``x`` [B, C, H, W] (after this layer's zero padding, the
        only copy) as a strided view [shifts, shifts, B, H', W', C, k_h, k_w]: shift (i, j) holds
        the patches of the input moved by i rows and j columns. ``out_hw`` and ``stride`` default
        to the layer's own. One copy of the view, rows in the order of ``filter_matrix``'s
        columns, replaces ``F.unfold``, which loops over the images and is slower
        (BENCHMARKS.md)."""
        out_hw, stride = out_hw or self.out_size(*x.shape[-2:]), stride or self.stride
        pad_h, pad_w = self.padding
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        s_b, s_c, s_h, s_w = x.stride()
        return x.as_strided((shifts, shifts, len(x), *out_hw, x.shape[1], *self.weight.shape[-2:]),
                            (s_h, s_w, s_b, stride[0] * s_h, stride[1] * s_w, s_c,
                             self.dilation[0] * s_h, self.dilation[1] * s_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, P*C, H, W], or [B, C, H, W] shared by every model (evaluation)."""
        if self.shares(x):
            return self.shared_forward(x)
        several_channels = self.weight.shape[2] > 1
        if self.kernels == "unfold" or (self.kernels == "unfold-multichannel"
                                        and several_channels):
            return self.unfold_forward(x)
        if self.kernels == "depthwise" and several_channels:
            return self.depthwise_forward(x)
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x.contiguous(memory_format=self.memory_format), self.weight.flatten(0, 1),
                        bias, self.stride, self.padding, self.dilation, groups=len(self.weight))

    def shared_forward(self, x: torch.Tensor) -> torch.Tensor:
        """All P models' convolutions of one input as one matrix product: patches [B*H'*W', C*k*k]
        x filters [C*k*k, P*O], whose rows are already the channels_last output [B, H', W', P*O].
        No copy of the input per model. Values agree with the grouped convolution of P copies to
        float rounding, and a model's do not depend on P (tests/test_population.py)."""
        batch, _, height, width = x.shape
        out_hw = self.out_size(height, width)
        patches = self.patch_view(x)
        filters = self.filter_matrix()
        out = patches.reshape(-1, len(filters)) @ filters
        if self.bias is not None:  # after the product, so SharedConvPool's floats equal these
            out += self.bias.flatten()
        return self.activation(out, batch, out_hw)

    def unfold_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P*C, H, W] -> [B, P*O, H', W'] as every model's patches [P, C*k*k, B*H'*W'] times its
        filters [P, O, C*k*k] in one batched matmul, so that forward and backward are a few
        launches for all P models (cuDNN runs small groups one at a time on a GPU). The patches
        take up to k*k times the input's memory."""
        n_models, out_channels = self.weight.shape[:2]
        batch, _, height, width = x.shape
        out_hw = self.out_size(height, width)
        # patches: [P, C*k*k, B*H'*W'], copied from a view [P, C*k*k, B, H'*W'] (F.unfold) or
        # [P, C, k, k, B, H', W'] (patch_view)
        if x.requires_grad:  # F.unfold's backward (F.fold) is the input gradient
            patches = F.unfold(x, self.weight.shape[-2:], self.dilation, self.padding, self.stride)
            patches = patches.view(batch, n_models, -1, patches.shape[-1]).permute(1, 2, 0, 3)
        else:  # one copy of a strided view; F.unfold launches a kernel per image on a GPU
            patches = self.patch_view(x)[0, 0].unflatten(3, (n_models, -1)) \
                .permute(3, 4, 5, 6, 0, 1, 2)
        patches = patches.reshape(n_models, -1, batch * out_hw[0] * out_hw[1])
        filters = self.weight.flatten(2)  # [P, O, C*k*k]
        out = torch.bmm(filters, patches) if self.bias is None else \
            torch.baddbmm(self.bias.unsqueeze(2), filters, patches)  # [P, O, B*H'*W']
        return out.view(n_models, out_channels, batch, *out_hw).permute(2, 0, 1, 3, 4) \
            .reshape(batch, n_models * out_channels, *out_hw).contiguous(
                memory_format=self.memory_format)

    def depthwise_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P*C, H, W] -> [B, P*O, H', W'] as one depthwise convolution, each of the P*C input
        channels with its model's O filters of that channel ([B, P*C*O, H', W'], C times the
        output), summed over each model's C channels. PyTorch runs a float32 NCHW depthwise
        convolution on a GPU as one kernel for all channels, forward and backward, where cuDNN
        runs a grouped convolution of few channels per group one group at a time."""
        n_models, out_channels, in_channels = self.weight.shape[:3]
        weight = self.weight.transpose(1, 2).reshape(-1, 1, *self.weight.shape[-2:])  # (p, c, o)
        each = F.conv2d(x.contiguous(memory_format=self.memory_format), weight, None, self.stride,
                        self.padding, self.dilation, groups=n_models * in_channels)
        out = each.unflatten(1, (n_models, in_channels, out_channels)).sum(2).flatten(1, 2)
        if self.bias is not None:
            out = out + self.bias.flatten()[:, None, None]
        return out.contiguous(memory_format=self.memory_format)


class SharedConvPool(nn.Module):
    """Evaluation only: a ``GroupedConv2d`` (stride 1, no dilation) on a shared input followed by
    a 2x2 max pool of stride 2, [B, C, H, W] -> [B, P*O, H'//2, W'//2], without writing the
    full-resolution output [B, P*O, H', W'] (the evaluation's largest activation).

    Each of the four window positions (i, j) is its own product of patches at stride 2 with the
    filters, [B*H'//2*W'//2, C*k*k] x [C*k*k, P*O], and the pool is their running maximum; the
    bias is added after it. Floats are those of pooling ``shared_forward``'s output: a maximum is
    exact and rounding is monotone, so max(fl(a + b)) = fl(max(a) + b) (tests/test_population.py).
    """

    def __init__(self, conv: GroupedConv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, H, W] shared by every model; per-model inputs [B, P*C, H, W] take the
        unfused convolution and pool."""
        conv = self.conv
        if not conv.shares(x):
            return F.max_pool2d(conv(x), 2)
        batch = len(x)
        pool_h, pool_w = (size // 2 for size in conv.out_size(*x.shape[-2:]))
        filters = conv.filter_matrix()
        # one copy of the patches of all four window positions: [4, B*pool_h*pool_w, C*k*k]
        patches = conv.patch_view(x, [pool_h, pool_w], stride=(2, 2), shifts=2) \
            .reshape(4, -1, len(filters))
        pooled = None
        for position in patches:
            out = position @ filters  # [B*pool_h*pool_w, P*O]
            pooled = out if pooled is None else torch.maximum(pooled, out, out=pooled)
        if conv.bias is not None:
            pooled += conv.bias.flatten()
        return conv.activation(pooled, batch, [pool_h, pool_w])

    @staticmethod
    def fits(conv: nn.Module, pool: torch.fx.Node, root: nn.Module) -> bool:
        """True when ``conv`` may fuse with the call ``pool`` (a node of ``root``'s graph): a
        stride-1 convolution and a plain 2x2 max pool of stride 2."""
        if not (isinstance(conv, GroupedConv2d) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and pool.op == "call_function"
                and pool.target is F.max_pool2d):
            return False
        call = pool.normalized_arguments(root, normalize_to_only_use_kwargs=True).kwargs
        pair = lambda v: tuple(v) if isinstance(v, list | tuple) else (v, v)  # noqa: E731
        return (pair(call["kernel_size"]) == (2, 2)
                and (not call["stride"] or pair(call["stride"]) == (2, 2))  # None: the kernel
                and pair(call["padding"]) == (0, 0) and pair(call["dilation"]) == (1, 1)
                and not call["ceil_mode"] and not call["return_indices"])


class GroupedLinear(nn.Module):
    """P linear layers as one batched matmul: [B, P*in], [B, P, in] or [B, in] (one input shared by
    every model) -> [B, P, out]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight, self.bias = weight, bias  # [P, out, in], [P, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_models, n_in = len(self.weight), self.weight.shape[2]
        if n_models > 1 and x.dim() == 2 and x.shape[1] == n_in:  # shared: a view, not P copies
            x = x.unsqueeze(1).expand(len(x), n_models, n_in)
        per_model = x.reshape(len(x), n_models, -1).transpose(0, 1)  # [P, B, in]
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
        return x * to_population_arrangement(keep.to(x.dtype), flat) \
            / to_population_arrangement(1.0 - rates, flat)


def to_population_arrangement(per_model: torch.Tensor, flat: bool) -> torch.Tensor:
    """[P, B, C, ...] -> [B, P*C, ...] (``flat``: conv activations and inputs) or [B, P, C, ...]."""
    moved = per_model.movedim(0, 1)
    return moved.reshape(len(moved), -1, *moved.shape[3:]) if flat else moved


def conv_layout(device: torch.device) -> torch.memory_format:
    """The faster layout of grouped conv activations on ``device``: channels_last for oneDNN on the
    CPU, NCHW for cuDNN on a GPU (both measured in BENCHMARKS.md)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def conv_kernels(device: torch.device) -> str:
    """The default ``CONV_KERNELS`` entry on ``device``: the one the environment variable
    ``MODELZOO_CONV_KERNELS`` names (on any device: how a real zoo tries the GPU options), else
    "grouped" on every device until the GPU options are measured against it (``python -m
    benchmarks.bench_gpu --sections profile``)."""
    chosen = os.environ.get(CONV_KERNELS_ENV) or "grouped"
    if chosen not in CONV_KERNELS:
        raise ZooError(f"{CONV_KERNELS_ENV}={chosen}: choose from {', '.join(CONV_KERNELS)}")
    return chosen


class _GroupedTracer(torch.fx.Tracer):
    """Traces a grouped network's forward, keeping the grouped layers as calls."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, GroupedConv2d | GroupedLinear | GroupedDropout) or \
            super().is_leaf_module(module, qualified_name)


def shared_input_network(network: nn.Module) -> nn.Module:
    """``network`` (from ``grouped_network``) for evaluation on one input shared by every model:
    its forward traced (``torch.fx``) with no dropout, and a first convolution followed by a 2x2
    max pool fused into ``SharedConvPool``. Call it in eval mode: x [B, ...] -> [B, P, classes].
    A forward that cannot be traced (padding computed from the input's shape) stays as it is."""
    try:
        with alone():  # tracing patches torch.nn.Module for every thread
            graph = _GroupedTracer().trace(network, concrete_args={"dropout_key": None,
                                                                   "dropout_p": None})
    except torch.fx.proxy.TraceError:
        return network
    root = torch.fx.GraphModule(network, graph)
    first = next(n for n in graph.nodes if n.op == "placeholder")
    for node in list(graph.nodes):
        if node.op != "call_module" or node.args[:1] != (first,) or len(node.users) != 1:
            continue
        pool = next(iter(node.users))
        conv = root.get_submodule(node.target)
        if SharedConvPool.fits(conv, pool, root):
            name = f"{node.target.replace('.', '_')}_pool"
            root.add_module(name, SharedConvPool(conv))
            with graph.inserting_after(pool):
                fused = graph.call_module(name, (first,))
            pool.replace_all_uses_with(fused)
            graph.erase_node(pool)
            graph.erase_node(node)
    graph.lint()
    root.recompile()
    return root


def grouped_network(template: nn.Module, params: dict[str, torch.Tensor],
                    memory_format: torch.memory_format | None = None,
                    kernels: str | None = None) -> nn.Module:
    """A copy of ``template`` whose layers compute all P models in ``params`` ({name: [P, ...]}).

    The network holds ``params``' tensors themselves, so in-place optimiser updates reach it.
    ``memory_format``: the conv activations' layout (default: ``conv_layout`` of their device).
    ``kernels``: how convolutions of per-model inputs run, one of ``CONV_KERNELS`` (default:
    ``conv_kernels`` of the device; ``benchmarks/bench_gpu.py`` times each on a GPU).
    """
    device = next(iter(params.values())).device
    memory_format = memory_format or conv_layout(device)
    kernels = kernels or conv_kernels(device)
    network = copy.deepcopy(template)
    for name, module in list(network.named_modules()):
        if isinstance(module, nn.Conv2d):
            grouped = GroupedConv2d(module, params[f"{name}.weight"], params.get(f"{name}.bias"),
                                    memory_format, kernels)
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
