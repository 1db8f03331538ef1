"""Exit heads. Every head maps a feature map (B, C, H, W) to ``(hint features (B, D), logits (B, K))``.

* :class:`BottleneckExitHead` — the added exits (BYOT style), made only of Conv2d/BatchNorm2d/ReLU/
  AdaptiveAvgPool2d/Linear so TensorRT compiles them without plugins.
* :class:`ClassifierHead` — the deepest exit: the backbone's own pooling and classifier.
"""

from __future__ import annotations

from torch import Tensor, nn

#: Upper bound of the default bottleneck width (see :func:`default_head_width`).
MAX_DEFAULT_WIDTH = 128


def default_head_width(in_channels: int) -> int:
    """Default reduced channel count of a bottleneck head: ``min(128, max(16, in_channels // 2))``.

    Halving the input channels (at least 16, so thin early stages still get a usable head) keeps the 1x1 reduce
    and the stride-2 3x3 convs cheap; the cap of 128 keeps heads on wide stages (256/512 channels) from growing
    with the backbone. With these widths every head costs well under the backbone after its exit.
    """
    return min(MAX_DEFAULT_WIDTH, max(16, in_channels // 2))


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0; Linear layers keep PyTorch's default init.

    (A small-normal Linear init trained markedly slower in short runs, so it is left alone.)
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    """Conv (no bias, 'same' padding) + BN + ReLU."""
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


def num_downsamples(in_reduction: int, out_reduction: int) -> int:
    """log2(out_reduction / in_reduction): how many stride-2 convs bring one resolution to the other."""
    ratio, rem = divmod(out_reduction, in_reduction) if in_reduction >= 1 else (0, 0)
    if rem or ratio < 1 or ratio & (ratio - 1):
        raise ValueError(f"out_reduction {out_reduction} must be in_reduction {in_reduction} times a power of two")
    return ratio.bit_length() - 1


class BottleneckExitHead(nn.Module):
    """1x1 reduce to ``width`` -> log2(out/in reduction) x [3x3 stride-2 conv+BN+ReLU] -> 1x1 expand to
    ``feature_dim`` (+BN+ReLU) -> global average pool -> flatten (hint features) -> Linear (logits).

    ``width`` defaults to :func:`default_head_width` ``(in_channels)``.
    """

    def __init__(self, in_channels: int, in_reduction: int, out_reduction: int, feature_dim: int,
                 num_classes: int, *, width: int | None = None) -> None:
        super().__init__()
        width = default_head_width(in_channels) if width is None else int(width)
        layers = _conv_bn_relu(in_channels, width, 1, 1)
        for _ in range(num_downsamples(in_reduction, out_reduction)):
            layers += _conv_bn_relu(width, width, 3, 2)
        layers += _conv_bn_relu(width, feature_dim, 1, 1)
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feature_dim, num_classes)
        self.width = width
        self.feature_dim = feature_dim
        kaiming_init(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, C, H, W) -> (hint (B, D), logits (B, K))."""
        y = self.body(x)  # (B, D, H', W') at the deepest stage's resolution
        hint = self.pool(y).flatten(1)  # (B, D)
        return hint, self.fc(hint)  # (B, D), (B, K)


class ClassifierHead(nn.Module):
    """The deepest exit: ``pool`` -> flatten (hint features, dim = last stage channels) -> ``classifier``.

    ``classifier`` is the backbone's own Linear or classifier sequence (e.g. MobileNetV3's Linear-Hardswish-
    Dropout-Linear); the hint features are the pooled features before it.
    """

    def __init__(self, classifier: nn.Module, feature_dim: int, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool is None else pool
        self.classifier = classifier
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, C, H, W) -> (hint (B, C), logits (B, K))."""
        hint = self.pool(x).flatten(1)  # (B, C)
        return hint, self.classifier(hint)  # (B, C), (B, K)
