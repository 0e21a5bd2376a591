"""What every zoo model shares: activations, initialisations and keyed dropout.

A classification zoo model (``ZooModel``) takes ``forward(x, dropout_key=None, dropout_p=None)``:
- ``x``: images, float32 [batch, channels, height, width] (the Tetris MLP also takes [batch, 16]);
- ``dropout_key``: 0-d int64 tensor; when given in training mode, dropout masks are a pure function of
  it (see ``modelzoo.randomness``), so a model draws the same masks alone or in a population;
- ``dropout_p``: 0-d float32 tensor overriding the constructor's rate (a per-model rate in populations).
It returns log-probabilities [batch, num_classes].

Weights are initialised in the constructor with ``init`` (see ``INIT_METHODS``) and every bias with
``bias_init`` (0.01 in the published zoos).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modelzoo.errors import ZooError
from modelzoo.randomness import derive_key, keyed_uniform

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "leakyrelu": F.leaky_relu,
    "silu": F.silu,
}

# "uniform" and "normal" are Glorot (Xavier) uniform / normal: the published zoos name them without
# their bounds, and a fan-scaled choice keeps every activation trainable (documented in DATASET_CARD.md).
INIT_METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform": nn.init.xavier_uniform_,
    "normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def keyed_keep(key: torch.Tensor, index: int, shape: tuple[int, ...],
               rate: torch.Tensor) -> torch.Tensor:
    """Dropout's keep mask (bool, ``shape``) for dropout layer ``index`` of the model whose step key
    is the 0-d ``key``, at ``rate`` (0-d): the same mask alone and in any population."""
    return keyed_uniform(derive_key(key, index), shape) >= rate


class KeyedDropout(nn.Module):
    """Inverted dropout whose mask is keyed by (dropout_key, layer index) when a key is given."""

    def __init__(self, p: float, index: int):
        super().__init__()
        self.p = float(p)
        self.index = index

    def forward(self, x, key=None, p=None):
        if not self.training or (p is None and self.p == 0):
            return x  # at rate 0 the mask keeps everything: x * 1 / 1 is x, bit for bit
        if key is None:
            return F.dropout(x, self.p if p is None else float(p), training=True)
        # a fill, not torch.tensor: no host-to-device copy, so no sync on a GPU and no failure
        # inside a CUDA graph's capture (pytorch/pytorch#168991)
        rate = p.to(x.dtype) if p is not None else \
            torch.full((), self.p, dtype=x.dtype, device=x.device)
        keep = keyed_keep(key, self.index, x.shape, rate)
        return x * keep.to(x.dtype) / (1.0 - rate)


class ZooModule(nn.Module):
    """Base of every zoo architecture: activation, keyed dropout layers and weight initialisation."""

    def __init__(self, activation: str, dropout: float, init: str, bias_init: float):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ZooError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if init not in INIT_METHODS:
            raise ZooError(f"unknown init {init!r}; choose from {sorted(INIT_METHODS)}")
        if not 0.0 <= dropout < 1.0:
            raise ZooError(f"dropout must be in [0, 1), got {dropout}")
        self.act = ACTIVATIONS[activation]
        self.activation, self.dropout, self.init, self.bias_init = activation, dropout, init, bias_init

    def drop(self, index: int) -> KeyedDropout:
        return KeyedDropout(self.dropout, index)

    def reset_parameters(self) -> None:
        """Initialise conv/linear weights with ``self.init`` and their biases with ``bias_init``."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                INIT_METHODS[self.init](module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, self.bias_init)




class ZooModel(ZooModule):
    """A classification zoo model: ``forward(x, dropout_key=None, dropout_p=None)`` returns
    log-probabilities [batch, num_classes] (the contract stated at the top of this module).
    Population training (``modelzoo.train.population``) and every classification feature rely on it."""


class TaskModel(ZooModule):
    """A remote-sensing task model: ``forward(**inputs)`` takes named inputs (float32 [B, C, H, W]
    images, [B, 4] weather) and returns a dict of named outputs; its task objective
    (``modelzoo.train.tasks``) says which inputs it gets and what its outputs mean. It trains one
    model at a time, with plain dropout."""
