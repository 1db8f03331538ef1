"""CIFAR-style ResNets (3x3 stem, no max-pool) as multi-exit nets; the variants are rows of one table.

``resnet8/14/20/32/56``: 16-channel stem, stages of 16/32/64 channels with strides 1/2/2 and (depth-2)/6
BasicBlocks each. ``cifar_resnet18/34``: 64-channel stem, stages of 64/128/256/512 channels with strides
1/2/2/2 and [2,2,2,2] / [3,4,6,3] blocks. Projection shortcuts (1x1 conv + BN) where the shape changes.
The deepest exit is global average pool + Linear.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

from edgekd.training.models.assembly import assemble, check_common
from edgekd.training.models.heads import ClassifierHead, kaiming_init
from edgekd.training.models.multi_exit import MultiExitNet
from edgekd.training.models.registry import register_model


@dataclass(frozen=True)
class CifarResNetSpec:
    """One CIFAR ResNet variant: stem channels, and per stage its channels, stride and block count."""

    stem: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    blocks: tuple[int, ...]


def _thin(depth: int) -> CifarResNetSpec:
    """The 6n+2 ResNets of He et al. for CIFAR: three stages of n blocks."""
    n = (depth - 2) // 6
    return CifarResNetSpec(16, (16, 32, 64), (1, 2, 2), (n, n, n))


VARIANTS: dict[str, CifarResNetSpec] = {
    "resnet8": _thin(8),
    "resnet14": _thin(14),
    "resnet20": _thin(20),
    "resnet32": _thin(32),
    "resnet56": _thin(56),
    "cifar_resnet18": CifarResNetSpec(64, (64, 128, 256, 512), (1, 2, 2, 2), (2, 2, 2, 2)),
    "cifar_resnet34": CifarResNetSpec(64, (64, 128, 256, 512), (1, 2, 2, 2), (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with a ReLU between, added to the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        y = self.relu(self.bn1(self.conv1(x)))  # (B, C_out, H', W')
        y = self.bn2(self.conv2(y))  # (B, C_out, H', W')
        return self.relu(y + self.shortcut(x))


def _stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one changes channels/stride."""
    return nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(blocks)])


def _stages(spec: CifarResNetSpec, in_chans: int) -> list[nn.Module]:
    """Backbone stages; stage 0 includes the 3x3 stem conv+BN+ReLU."""
    stem = nn.Sequential(nn.Conv2d(in_chans, spec.stem, 3, padding=1, bias=False), nn.BatchNorm2d(spec.stem),
                         nn.ReLU())
    stages: list[nn.Module] = []
    cin = spec.stem
    for i, (cout, stride, blocks) in enumerate(zip(spec.widths, spec.strides, spec.blocks)):
        body = _stage(cin, cout, stride, blocks)
        stages.append(nn.Sequential(OrderedDict(stem=stem, layer=body)) if i == 0 else body)
        cin = cout
    return stages


def build_cifar_resnet(spec: CifarResNetSpec, *, num_classes: int, in_chans: int = 3,
                       input_size: tuple[int, int] = (32, 32), exits: list[int] | None = None,
                       head_width: int | None = None) -> MultiExitNet:
    """Multi-exit CIFAR ResNet of variant ``spec`` (Kaiming-initialised)."""
    size = check_common(num_classes, in_chans, input_size)
    stages = _stages(spec, in_chans)
    for stage in stages:
        kaiming_init(stage)
    reductions, r = [], 1
    for stride in spec.strides:
        r *= stride
        reductions.append(r)
    final = ClassifierHead(nn.Linear(spec.widths[-1], num_classes), feature_dim=spec.widths[-1])
    kaiming_init(final)
    return assemble(stages, spec.widths, reductions, final, feature_dim=spec.widths[-1], exits=exits,
                    head_width=head_width, num_classes=num_classes, in_chans=in_chans, input_size=size)


for _name, _spec in VARIANTS.items():
    register_model(_name)(functools.partial(build_cifar_resnet, _spec))
