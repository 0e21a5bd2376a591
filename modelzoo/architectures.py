"""Zoo architectures behind one registry: ``create_model(name, **kwargs)``.

Every model takes ``forward(x, dropout_key=None, dropout_p=None)``:
- ``x``: images, float32 [batch, channels, height, width] (the Tetris MLP also takes [batch, 16]);
- ``dropout_key``: 0-d int64 tensor; when given in training mode, dropout masks are a pure function of
  it (see ``modelzoo.randomness``), so a model draws the same masks alone or in a population;
- ``dropout_p``: 0-d float32 tensor overriding the constructor's rate (a per-model rate in populations).
Returns log-probabilities [batch, num_classes].

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
        if not self.training:
            return x
        if key is None:
            return F.dropout(x, self.p, training=True) if p is None else F.dropout(x, float(p), True)
        rate = torch.tensor(self.p, dtype=x.dtype, device=x.device) if p is None else p.to(x.dtype)
        keep = keyed_keep(key, self.index, x.shape, rate)
        return x * keep.to(x.dtype) / (1.0 - rate)


class ZooModel(nn.Module):
    """Base class: activation, dropout layers and weight initialisation shared by zoo models."""

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


class TetrisMLP(ZooModel):
    """16 -> 5 -> 4 MLP without biases (100 parameters) on flattened 4x4 Tetris images."""

    def __init__(self, activation="tanh", dropout=0.0, init="uniform", bias_init=0.01,
                 in_features=16, hidden=5, num_classes=4):
        super().__init__(activation, dropout, init, bias_init)
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.drop1 = self.drop(0)
        self.fc2 = nn.Linear(hidden, num_classes, bias=False)
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        x = self.drop1(self.act(self.fc1(x.flatten(1))), dropout_key, dropout_p)
        return F.log_softmax(self.fc2(x), dim=-1)


class CNNSmall(ZooModel):
    """CNN-s for 28x28 inputs: 2,464 parameters (1 channel) or 2,864 (3 channels)."""

    def __init__(self, in_channels=1, num_classes=10, activation="tanh", dropout=0.0, init="uniform",
                 bias_init=0.01):
        super().__init__(activation, dropout, init, bias_init)
        self.conv1 = nn.Conv2d(in_channels, 8, 5)
        self.conv2 = nn.Conv2d(8, 6, 5)
        self.conv3 = nn.Conv2d(6, 4, 2)
        self.fc1 = nn.Linear(36, 20)
        self.fc2 = nn.Linear(20, num_classes)
        self.drop1, self.drop2, self.drop3 = self.drop(0), self.drop(1), self.drop(2)
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        x = self.drop1(self.act(F.max_pool2d(self.conv1(x), 2)), dropout_key, dropout_p)
        x = self.drop2(self.act(F.max_pool2d(self.conv2(x), 2)), dropout_key, dropout_p)
        x = self.act(self.conv3(x)).flatten(1)
        x = self.drop3(self.act(self.fc1(x)), dropout_key, dropout_p)
        return F.log_softmax(self.fc2(x), dim=-1)


class CNNLarge(ZooModel):
    """CNN-l for 32x32 inputs: 10,853 parameters with 3 channels."""

    def __init__(self, in_channels=3, num_classes=10, activation="tanh", dropout=0.0, init="uniform",
                 bias_init=0.01):
        super().__init__(activation, dropout, init, bias_init)
        self.conv1 = nn.Conv2d(in_channels, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.conv3 = nn.Conv2d(32, 15, 3)
        self.fc1 = nn.Linear(60, 20)
        self.fc2 = nn.Linear(20, num_classes)
        self.drops = nn.ModuleList(self.drop(i) for i in range(4))
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        for conv, drop in zip((self.conv1, self.conv2, self.conv3), self.drops):
            x = drop(self.act(F.max_pool2d(conv(x), 2)), dropout_key, dropout_p)
        x = self.drops[3](self.act(self.fc1(x.flatten(1))), dropout_key, dropout_p)
        return F.log_softmax(self.fc2(x), dim=-1)


class UnterthinerCNN(ZooModel):
    """Unterthiner et al. (2020): 3 x Conv(16, k3, stride 2) -> global average pool -> Dense(10).

    4,970 parameters on one input channel. Padding 1 on every side by default; ``tf_padding=True``
    pads as TensorFlow's 'same' does (the extra row / column at the bottom / right when the total
    is odd), which imported Unterthiner models need to compute their original function. The
    parameter count and tokens are the same either way.
    """

    def __init__(self, in_channels=1, num_classes=10, filters=16, activation="relu", dropout=0.0,
                 init="uniform", bias_init=0.01, tf_padding=False):
        super().__init__(activation, dropout, init, bias_init)
        self.tf_padding = tf_padding
        padding = 0 if tf_padding else 1
        self.conv1 = nn.Conv2d(in_channels, filters, 3, stride=2, padding=padding)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride=2, padding=padding)
        self.conv3 = nn.Conv2d(filters, filters, 3, stride=2, padding=padding)
        self.fc = nn.Linear(filters, num_classes)
        self.drops = nn.ModuleList(self.drop(i) for i in range(3))
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        for conv, drop in zip((self.conv1, self.conv2, self.conv3), self.drops):
            if self.tf_padding:
                x = F.pad(x, tf_same_padding(x.shape[-2:], kernel=3, stride=2))
            x = drop(self.act(conv(x)), dropout_key, dropout_p)
        return F.log_softmax(self.fc(x.mean(dim=(2, 3))), dim=-1)


def tf_same_padding(size: tuple[int, int], kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of TensorFlow's 'same' for an input of ``size`` (H, W):
    output ceil(size / stride), the odd pixel of the total padding after the input."""
    pads = []
    for n in reversed(tuple(size)):
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, act):
        super().__init__()
        self.act = act
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet18(ZooModel):
    """CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool, BasicBlock [2, 2, 2, 2].

    11,173,962 parameters with 10 classes; works for 32x32 and 64x64 inputs (global average pool).
    """

    def __init__(self, in_channels=3, num_classes=10, activation="relu", dropout=0.0,
                 init="kaiming_uniform", bias_init=0.01):
        super().__init__(activation, dropout, init, bias_init)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride, self.act),
                                        BasicBlock(planes, planes, 1, self.act)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.drop1 = self.drop(0)
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.drop1(x.mean(dim=(2, 3)), dropout_key, dropout_p)
        return F.log_softmax(self.fc(x), dim=-1)


MODELS: dict[str, type[ZooModel]] = {
    "tetris_mlp": TetrisMLP,
    "cnn_s": CNNSmall,
    "cnn_l": CNNLarge,
    "unterthiner_cnn": UnterthinerCNN,
    "resnet18": ResNet18,
}


def register_model(name: str):
    """Class decorator adding an architecture to the registry under ``name``."""

    def wrap(cls):
        MODELS[name] = cls
        return cls

    return wrap


def create_model(name: str, **kwargs) -> ZooModel:
    """Build a registered architecture; unknown names or arguments raise ``ZooError``."""
    if name not in MODELS:
        raise ZooError(f"unknown architecture {name!r}; choose from {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise ZooError(f"architecture {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the remote-sensing module registers its architectures.
from modelzoo.remote_sensing import models as _remote_sensing_models  # noqa: E402,F401
