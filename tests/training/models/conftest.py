"""Fixtures for the model tests: small input sizes per model and a cache of built eval-mode models."""

from __future__ import annotations

import pytest
import torch

from edgekd.training.models import create_model, list_models

NUM_CLASSES = 5
_CACHE: dict[str, torch.nn.Module] = {}


def _size_for(name: str) -> tuple[int, int]:
    """Small test input size: 64x64 for ImageNet-style nets (stride 32), 16x16 for CIFAR nets."""
    return (64, 64) if name.startswith("tv_") else (16, 16)


def _build(name: str, **kwargs) -> torch.nn.Module:
    """Build ``name`` at its small test size with NUM_CLASSES classes (kwargs override)."""
    torch.manual_seed(0)
    opts = {"num_classes": NUM_CLASSES, "input_size": _size_for(name), **kwargs}
    return create_model(name, **opts)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one intra-op thread avoids oversubscription slowdowns on busy CI machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def build():
    """``build(name, **kwargs)``: a fresh model at the small test size."""
    return _build


@pytest.fixture(params=list_models())
def model_name(request) -> str:
    return request.param


@pytest.fixture
def eval_model(model_name):
    """A cached eval-mode model per registered name (tests using it must not modify it)."""
    if model_name not in _CACHE:
        _CACHE[model_name] = _build(model_name).eval()
    return _CACHE[model_name]


@pytest.fixture
def images(eval_model):
    """A batch of 2 random images fitting ``eval_model``: (2, C, H, W)."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, eval_model.in_chans, *eval_model.input_size, generator=g)
