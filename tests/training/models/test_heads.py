"""Exit heads: layer structure, shapes and the default width rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.training.models.heads import BottleneckExitHead, ClassifierHead, default_head_width

ALLOWED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Linear, nn.Sequential, BottleneckExitHead)


@pytest.mark.parametrize("in_red,out_red,n_down", [(1, 4, 2), (2, 4, 1), (4, 32, 3), (8, 8, 0)])
def test_bottleneck_downsamples_to_target_resolution(in_red, out_red, n_down):
    head = BottleneckExitHead(24, in_red, out_red, feature_dim=40, num_classes=7).eval()
    strided = [m for m in head.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == n_down
    assert all(m.kernel_size == (3, 3) for m in strided)
    assert all(isinstance(m, ALLOWED) for m in head.modules())
    x = torch.randn(2, 24, 32 // in_red, 32 // in_red)  # input at stride in_red of a 32x32 image
    body_out = head.body(x)
    assert body_out.shape == (2, 40, 32 // out_red, 32 // out_red)
    hint, logits = head(x)
    assert hint.shape == (2, 40) and logits.shape == (2, 7)
    assert torch.allclose(hint, body_out.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("cin,expected", [(8, 16), (16, 16), (64, 32), (256, 128), (2048, 128)])
def test_default_width(cin, expected):
    assert default_head_width(cin) == expected
    head = BottleneckExitHead(cin, 1, 2, feature_dim=10, num_classes=3)
    assert head.width == expected
    assert head.body[0].out_channels == expected


def test_explicit_width():
    head = BottleneckExitHead(64, 1, 2, feature_dim=10, num_classes=3, width=20)
    assert head.width == 20 and head.body[0].out_channels == 20


@pytest.mark.parametrize("in_red,out_red", [(4, 2), (2, 6), (0, 4)])
def test_impossible_reduction_rejected(in_red, out_red):
    with pytest.raises(ValueError):
        BottleneckExitHead(16, in_red, out_red, feature_dim=10, num_classes=3)


def test_classifier_head_hint_is_pooled_features():
    fc = nn.Linear(12, 4)
    head = ClassifierHead(fc, feature_dim=12)
    x = torch.randn(2, 12, 3, 3)
    hint, logits = head(x)
    assert torch.allclose(hint, x.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(logits, fc(hint))
