"""Teachers: any registered model, or any torchvision classifier wrapped as a single-exit model.

``create_model("torchvision:NAME", num_classes=K, in_chans=C, input_size=(H, W))`` wraps
``torchvision.models.get_model(NAME, weights=None, num_classes=K)``. Its only "segment" is the whole network and
its hint features are the logits themselves, so these wrappers are only meant as teachers (no exit_info, no
per-segment export). Grayscale input (``in_chans == 1``) is repeated to 3 channels so RGB weights still fit.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import Tensor, nn

from edgekd.core.errors import ConfigError
from edgekd.training.models.assembly import check_common
from edgekd.training.models.multi_exit import MultiExitOutput
from edgekd.training.weights import safe_torch_load


class TorchvisionTeacher(nn.Module):
    """Single-exit wrapper: ``forward(x) = MultiExitOutput([logits], [logits])``."""

    def __init__(self, net: nn.Module, *, num_classes: int, in_chans: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = input_size
        self.gray_to_rgb = in_chans == 1

    @property
    def num_exits(self) -> int:
        return 1

    def forward(self, x: Tensor) -> MultiExitOutput:
        """Images (B, C_in, H, W) -> one exit whose logits (B, K) double as hint features."""
        if self.gray_to_rgb:  # fixed at construction, not data-dependent
            x = x.repeat(1, 3, 1, 1)  # (B, 3, H, W)
        logits = self.net(x)  # (B, K)
        return MultiExitOutput([logits], [logits])


def torchvision_builder(tv_name: str) -> Callable[..., nn.Module]:
    """Keyword-only builder for ``torchvision:<tv_name>`` with the registry's builder signature."""

    def build(*, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] = (224, 224),
              exits: list[int] | None = None, head_width: int | None = None) -> nn.Module:
        size = check_common(num_classes, in_chans, input_size)
        if in_chans not in (1, 3):
            raise ConfigError(f"torchvision teachers take 1 or 3 input channels, got {in_chans}")
        if exits is not None or head_width is not None:
            raise ConfigError(f"torchvision:{tv_name} is a single-exit teacher; exits/head_width do not apply")
        try:
            net = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes)
        except ValueError:
            raise ConfigError(f"unknown torchvision model {tv_name!r} (see torchvision.models.list_models())") \
                from None
        return TorchvisionTeacher(net, num_classes=num_classes, in_chans=in_chans, input_size=size)

    return build


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and stop gradients to all its parameters; returns it."""
    model.eval()
    model.requires_grad_(False)
    return model


class CompiledTeacher(nn.Module):
    """``torch.compile`` of a frozen teacher that falls back to running it eagerly, with one warning, if compiling
    fails (no C++ compiler for inductor, an operator it cannot lower): the same logits either way, up to rounding."""

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.eager = eager
        self.compiled = torch.compile(eager)
        self.failure: str | None = None

    def forward(self, x: Tensor):
        if self.failure is None:
            try:
                return self.compiled(x)
            except Exception as exc:  # noqa: BLE001  any compiler failure: the eager teacher computes the same
                self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                warnings.warn(f"torch.compile of the teacher failed ({self.failure[:200]}); running it eagerly",
                              stacklevel=2)
        return self.eager(x)


def inference_teacher(model: nn.Module, *, device: torch.device | str = "cpu", channels_last: bool = True,
                      compile: bool = False) -> nn.Module:
    """A frozen teacher prepared for the forward passes the student's losses ask of it (same logits).

    Eval mode with no gradients (:func:`freeze`; the loop calls it under ``torch.inference_mode``), weights in
    channels-last layout like the student's inputs, and with ``compile`` torch.compile (falling back to eager if
    compiling fails). Measured on 2 CPU cores, CIFAR ResNet-56 at batch 64 (``scripts/bench_train.py
    --teacher-forward --compile``, fastest call per block): autograd, ``no_grad`` and ``inference_mode`` cost the same
    (a frozen teacher records nothing), 168–174 ms; channels-last input 125 ms; channels-last weights 122 ms;
    torch.compile 109 ms (−13%; a kd step 274 → 256 ms, −7%) after a first call of about 35 s cold or 3 s with
    inductor's cache warm, so it is an option for long runs, not the default; BatchNorm folded into the convolutions
    (torch.fx) was slower (135 ms) and is not done.
    """
    fast = freeze(model).to(device)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return freeze(CompiledTeacher(fast)) if compile else fast


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a plain state_dict file (strict); any problem is a ConfigError naming the file."""
    path = Path(path)
    state = safe_torch_load(path, ConfigError, "teacher weights")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"teacher weights {path} are not a plain state_dict")
    target = model
    if isinstance(model, TorchvisionTeacher) and not any(k.startswith("net.") for k in state):
        target = model.net  # a bare torchvision state_dict
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]  # line 0 is "Error(s) in loading state_dict for ..."
        raise ConfigError(f"teacher weights {path} do not fit the model: {detail[:200]}") from None
