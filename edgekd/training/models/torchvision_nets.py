"""ImageNet-style backbones from torchvision (``weights=None``), split at their stages into multi-exit nets.

* ``tv_resnet18``: stages stem (conv1, bn1, relu, maxpool) + layer1 (/4), layer2 (/8), layer3 (/16),
  layer4 (/32); the deepest exit is torchvision's own avgpool + fc.
* ``tv_mobilenet_v3_small``: ``features`` split where the resolution changes: [0:2] (/4), [2:4] (/8),
  [4:9] (/16), [9:13] (/32); the deepest exit is torchvision's avgpool + classifier, whose hint features are the
  pooled 576-dim features.

Both default to 224x224 input. ``in_chans != 3`` replaces the first conv with one taking ``in_chans``.
"""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import nn

from edgekd.training.models.assembly import assemble, check_common
from edgekd.training.models.heads import ClassifierHead
from edgekd.training.models.multi_exit import MultiExitNet
from edgekd.training.models.registry import register_model

IMAGENET_SIZE = (224, 224)


def replace_in_channels(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A freshly (Kaiming) initialised copy of ``conv`` taking ``in_chans`` input channels."""
    if conv.in_channels == in_chans:
        return conv
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


@register_model("tv_resnet18")
def tv_resnet18(*, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] = IMAGENET_SIZE,
                exits: list[int] | None = None, head_width: int | None = None) -> MultiExitNet:
    """torchvision ResNet-18 with exits after layer1..layer4."""
    size = check_common(num_classes, in_chans, input_size)
    tv = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    tv.conv1 = replace_in_channels(tv.conv1, in_chans)
    stem = OrderedDict(conv1=tv.conv1, bn1=tv.bn1, relu=tv.relu, maxpool=tv.maxpool, layer1=tv.layer1)
    stages = [nn.Sequential(stem), tv.layer2, tv.layer3, tv.layer4]
    final = ClassifierHead(tv.fc, feature_dim=tv.fc.in_features, pool=tv.avgpool)
    return assemble(stages, [64, 128, 256, 512], [4, 8, 16, 32], final, feature_dim=tv.fc.in_features,
                    exits=exits, head_width=head_width, num_classes=num_classes, in_chans=in_chans,
                    input_size=size)


@register_model("tv_mobilenet_v3_small")
def tv_mobilenet_v3_small(*, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] = IMAGENET_SIZE,
                          exits: list[int] | None = None, head_width: int | None = None) -> MultiExitNet:
    """torchvision MobileNetV3-Small with exits at strides 4, 8, 16 and 32."""
    size = check_common(num_classes, in_chans, input_size)
    tv = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    first = tv.features[0]  # Conv2dNormActivation(conv, bn, hardswish)
    first[0] = replace_in_channels(first[0], in_chans)
    f = tv.features
    stages = [f[0:2], f[2:4], f[4:9], f[9:13]]
    channels = [16, 24, 48, 576]
    final = ClassifierHead(tv.classifier, feature_dim=channels[-1], pool=tv.avgpool)
    return assemble(stages, channels, [4, 8, 16, 32], final, feature_dim=channels[-1], exits=exits,
                    head_width=head_width, num_classes=num_classes, in_chans=in_chans, input_size=size)
