"""ResNet-18 for the CIFAR / Tiny-ImageNet zoos (defined here: torchvision is not a dependency)."""

import torch.nn.functional as F
from torch import nn

from modelzoo.models.base import ZooModel
from modelzoo.models.registry import register_model


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


@register_model("resnet18")
class ResNet18(ZooModel):
    """CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool, BasicBlock [2, 2, 2, 2].

    11,173,962 parameters with 10 classes at the published ``width`` 64 (channels of the first
    stage; the stages have width x 1, 2, 4, 8); works for any input of 4x4 or more (global average
    pool). Smaller widths make ResNet zoos that train and sample on a CPU.
    """

    def __init__(self, in_channels=3, num_classes=10, activation="relu", dropout=0.0,
                 init="kaiming_uniform", bias_init=0.01, width=64):
        super().__init__(activation, dropout, init, bias_init)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, in_planes = [], width
        for planes, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride, self.act),
                                        BasicBlock(planes, planes, 1, self.act)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.drop1 = self.drop(0)
        self.fc = nn.Linear(8 * width, num_classes)
        self.reset_parameters()

    def forward(self, x, dropout_key=None, dropout_p=None):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.drop1(x.mean(dim=(2, 3)), dropout_key, dropout_p)
        return F.log_softmax(self.fc(x), dim=-1)
