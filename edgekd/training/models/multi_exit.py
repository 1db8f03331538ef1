"""MultiExitNet: a backbone cut into segments, each followed by an exit head, plus its declared structure.

The declaration (:class:`ExitInfo`, one per exit) is measured once at construction by running a dummy batch of one
image through the network, so ONNX export, calibration, the runtime and the profiler can iterate it without
re-deriving shapes or costs.

MAC counting rule (batch 1, only ``nn.Conv2d`` and ``nn.Linear`` count; BN, activations, pooling and adds are free):

* conv: ``output elements * in_channels / groups * kh * kw``
* linear: ``in_features * out_features`` per sample (times any extra leading dims of the input)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from edgekd.core.manifest_records import ExitInfo


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``gamma`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: float) -> Tensor:
        ctx.gamma = gamma
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.gamma, None


def scale_grad(x: Tensor, gamma: float) -> Tensor:
    """``x`` unchanged, with the gradient that flows back through it multiplied by ``gamma`` (0 ≤ γ ≤ 1): γ = 1 is
    the identity, γ = 0 detaches (exactly no gradient), in between the gradient equilibrium of IMTA (Li et al.,
    2019) that keeps shallow exit heads from pulling the shared backbone towards themselves."""
    if gamma >= 1.0:
        return x
    if gamma <= 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, float(gamma))


class MultiExitOutput(NamedTuple):
    """Outputs of all exits, shallow to deep."""

    logits: list[Tensor]  # one (B, K) per exit
    features: list[Tensor]  # one (B, D) per exit: head features for the hint loss, same D for all exits


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    """MACs of one Conv2d/Linear call for the batch it saw (the counter runs with batch 1)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    return (output.numel() // module.out_features) * module.in_features * module.out_features


def count_macs(module: nn.Module, *args: Tensor) -> tuple[Any, int]:
    """Run ``module(*args)`` and return ``(output, MACs)`` counted with forward hooks on Conv2d/Linear."""
    total = [0]

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        total[0] += _layer_macs(mod, inputs, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        out = module(*args)
    finally:
        for h in handles:
            h.remove()
    return out, total[0]


def _reduction(input_size: tuple[int, int], feat_hw: tuple[int, int]) -> int:
    """Spatial stride of a feature map: the input/feature size ratio, rounded to the nearest power of two."""
    ratio = max(input_size[0] / feat_hw[0], input_size[1] / feat_hw[1])
    return 2 ** max(0, round(math.log2(ratio)))


class ExitSegment(nn.Module):
    """``forward(x) = net.forward_segment(index, x)``: one segment plus its head, as a module for ONNX export."""

    def __init__(self, net: MultiExitNet, index: int) -> None:
        super().__init__()
        self.segment = net.segments[index]
        self.head = net.heads[index]
        # Mirror the net's mode: exporters restore the wrapper's mode afterwards, which also sets the shared modules'.
        self.training = net.training

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.segment(x)  # (B, C_i, H_i, W_i)
        _, logits = self.head(feat)  # (B, K)
        return feat, logits


class MultiExitNet(nn.Module):
    """A network with one exit after each chosen backbone stage.

    ``segments[i]``: backbone stages after exit i-1 up to and including exit i's stage (the stem is in segment 0).
    ``heads[i]``: maps segment i's output feature map to ``(hint features (B, D), logits (B, K))``.
    """

    def __init__(
        self,
        segments: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        *,
        exit_stages: Sequence[int],
        input_size: tuple[int, int],
        in_chans: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        if not (len(segments) == len(heads) == len(exit_stages) >= 1):
            raise ValueError("need one head and one exit stage per segment, and at least one segment")
        if any(b <= a for a, b in zip(exit_stages, exit_stages[1:])):
            raise ValueError(f"exit stages must be strictly increasing, got {list(exit_stages)}")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_chans = int(in_chans)
        self.num_classes = int(num_classes)
        infos, feature_dim = self._measure(list(exit_stages))
        self.exit_info: tuple[ExitInfo, ...] = infos
        self.feature_dim: int = feature_dim  # D, shared by the hint features of all exits
        #: γ of :func:`scale_grad`: the gradient every shallow exit's head sends into the backbone is multiplied by
        #: it in training mode (1: plain joint training). Set by the training loop per phase; not a weight.
        self.head_grad: float = 1.0

    @property
    def num_exits(self) -> int:
        return len(self.segments)

    def _measure(self, exit_stages: list[int]) -> tuple[tuple[ExitInfo, ...], int]:
        """Run one dummy image through every segment and head; return (ExitInfo per exit, hint dimension D)."""
        was_training = self.training
        self.eval()
        infos, dims, total = [], set(), 0
        x = torch.zeros(1, self.in_chans, *self.input_size)  # (1, C_in, H, W)
        with torch.no_grad():
            for i, (segment, head) in enumerate(zip(self.segments, self.heads)):
                x, seg_macs = count_macs(segment, x)  # (1, C_i, H_i, W_i)
                (hint, logits), head_macs = count_macs(head, x)  # (1, D), (1, K)
                self._check_head_outputs(i, hint, logits)
                dims.add(hint.shape[1])
                total += seg_macs
                c, h, w = x.shape[1:]
                infos.append(ExitInfo(i, exit_stages[i], c, _reduction(self.input_size, (h, w)),
                                      (c, h, w), total + head_macs, head_macs))
        if len(dims) != 1:
            raise ValueError(f"all exit heads must produce hint features of one dimension, got {sorted(dims)}")
        self.train(was_training)
        return tuple(infos), dims.pop()

    def _check_head_outputs(self, i: int, hint: Tensor, logits: Tensor) -> None:
        """Heads must return (hint (B, D), logits (B, K))."""
        if hint.dim() != 2 or logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"head {i} returned shapes {tuple(hint.shape)}, {tuple(logits.shape)}; "
                             f"expected (B, D), (B, {self.num_classes})")

    def forward_segment_full(self, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Segment i then head i: ``(feat_i (B, C, H, W), hint_i (B, D), logits_i (B, K))``.

        ``x`` is the image for ``i == 0``, else ``feat_{i-1}``.
        """
        feat = self.segments[i](x)  # (B, C_i, H_i, W_i)
        hint, logits = self.heads[i](feat)  # (B, D), (B, K)
        return feat, hint, logits

    def forward_segment(self, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Segment i then head i: ``(feat_i (B, C, H, W), logits_i (B, K))``."""
        feat, _, logits = self.forward_segment_full(i, x)
        return feat, logits

    def segment(self, i: int) -> ExitSegment:
        """Module computing :meth:`forward_segment` ``(i, x)`` (shares weights with this net), e.g. for ONNX export."""
        return ExitSegment(self, i)

    def forward(self, x: Tensor) -> MultiExitOutput:
        """All exits on images ``x`` (B, C_in, H, W). In training mode each shallow head reads its segment's output
        through :func:`scale_grad` with :attr:`head_grad`; the next segment reads it unscaled."""
        logits, features = [], []
        last = self.num_exits - 1
        for i in range(self.num_exits):
            feat = self.segments[i](x)  # (B, C_i, H_i, W_i)
            head_in = scale_grad(feat, self.head_grad) if self.training and i < last else feat
            hint, out = self.heads[i](head_in)  # (B, D), (B, K)
            logits.append(out)
            features.append(hint)
            x = feat
        return MultiExitOutput(logits, features)

    # ------------------------------------------------------------------ weights independent of where exits are

    def portable_state_dict(self) -> dict[str, Tensor]:
        """The weights keyed by what they are, not by where the exits cut the backbone: ``stage{s}.…`` for backbone
        stage s (however the segments group the stages) and ``head@{s}.…`` for the head after stage s. A
        single-exit and a multi-exit model of the same backbone share every ``stage*`` key and the deepest head's."""
        out: dict[str, Tensor] = {}
        stage = 0
        for segment in self.segments:
            for child in segment.children():
                for key, value in child.state_dict().items():
                    out[f"stage{stage}.{key}"] = value
                stage += 1
        for info, head in zip(self.exit_info, self.heads):
            for key, value in head.state_dict().items():
                out[f"head@{info.stage}.{key}"] = value
        return out

    def load_portable_state_dict(self, state: dict[str, Tensor]) -> list[int]:
        """Load what :meth:`portable_state_dict` of a model of the same backbone holds: every backbone stage and the
        deepest head must be there with the same shapes (else ``ValueError`` naming the first difference); each
        shallow head is loaded when ``state`` has one after the same stage. Returns the exits whose heads kept their
        own (initial) weights."""
        own = self.portable_state_dict()
        last_stage = self.exit_info[-1].stage
        required = [k for k in own if k.startswith("stage") or k.startswith(f"head@{last_stage}.")]
        extra = [k for k in state if k not in own and (k.startswith("stage") or k.startswith(f"head@{last_stage}."))]
        if extra:
            raise ValueError(f"the weights hold {extra[0]!r}, which this model has not: not the same backbone")
        for key in required:
            if key not in state:
                raise ValueError(f"the weights have no {key!r}: not the same backbone")
            if tuple(state[key].shape) != tuple(own[key].shape):
                raise ValueError(f"{key} has shape {tuple(state[key].shape)}, this model {tuple(own[key].shape)}")
        kept = []
        for info in self.exit_info[:-1]:
            keys = [k for k in own if k.startswith(f"head@{info.stage}.")]
            if all(k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in keys):
                required += keys
            else:
                kept.append(info.index)
        with torch.no_grad():
            for key in required:
                own[key].copy_(state[key])  # state_dict tensors share storage with the parameters and buffers
        return kept
