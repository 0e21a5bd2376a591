"""The small image-classification architectures of the published zoos: Tetris MLP, CNN-s, CNN-l and
Unterthiner et al.'s CNN."""

import torch.nn.functional as F
from torch import nn

from modelzoo.errors import ZooError
from modelzoo.models.base import ZooModel
from modelzoo.models.registry import register_model


@register_model("tetris_mlp")
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


@register_model("cnn_s")
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


@register_model("cnn_l")
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


@register_model("unterthiner_cnn")
class UnterthinerCNN(ZooModel):
    """Unterthiner et al. (2020): 3 x Conv(16, k3, stride 2) -> global average pool -> Dense(10).

    4,970 parameters on one input channel. ``padding``:
    - ``"symmetric"`` (default, our own zoos): 1 pixel on every side;
    - ``"valid"``: none, as the published Small CNN Zoo was trained (Keras' default): 28x28 inputs
      give 13x13, 6x6, 2x2 maps;
    - ``"same"``: TensorFlow's 'same' (the odd pixel of the total padding after the input).
    ``tf_padding=True`` is the older name of ``padding="same"`` (archives written before keep it).
    The parameter count and tokens are the same in every mode.
    """

    PADDINGS = ("symmetric", "valid", "same")

    def __init__(self, in_channels=1, num_classes=10, filters=16, activation="relu", dropout=0.0,
                 init="uniform", bias_init=0.01, padding="symmetric", tf_padding=False):
        super().__init__(activation, dropout, init, bias_init)
        if tf_padding:
            padding = "same"
        if padding not in self.PADDINGS:
            raise ZooError(f"unterthiner_cnn padding {padding!r}: use symmetric, valid or same")
        self.padding = padding
        conv_padding = 1 if padding == "symmetric" else 0
        self.conv1 = nn.Conv2d(in_channels, filters, 3, stride=2, padding=conv_padding)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride=2, padding=conv_padding)
        self.conv3 = nn.Conv2d(filters, filters, 3, stride=2, padding=conv_padding)
        self.fc = nn.Linear(filters, num_classes)
        self.drops = nn.ModuleList(self.drop(i) for i in range(3))
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        for conv, drop in zip((self.conv1, self.conv2, self.conv3), self.drops):
            if self.padding == "same":
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
