"""Shared pieces of the model builders: option checks and cutting a list of stages into a MultiExitNet."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgekd.core.errors import ConfigError
from edgekd.training.models.heads import BottleneckExitHead
from edgekd.training.models.multi_exit import MultiExitNet


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_common(num_classes: int, in_chans: int, input_size: Sequence[int]) -> tuple[int, int]:
    """Validate the options every builder takes; return ``input_size`` as an (H, W) tuple."""
    if not _is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not _is_int(in_chans) or in_chans < 1:
        raise ConfigError(f"in_chans must be a positive integer, got {in_chans!r}")
    size = tuple(input_size) if isinstance(input_size, (list, tuple)) else ()
    if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
        raise ConfigError(f"input_size must be two positive integers (H, W), got {input_size!r}")
    return size[0], size[1]


def resolve_exits(exits: Sequence[int] | None, num_stages: int) -> list[int]:
    """Sorted stage indices to place exits after; default every stage; the last stage is always added."""
    if exits is None:
        return list(range(num_stages))
    if isinstance(exits, (str, bytes)) or not isinstance(exits, Sequence):
        raise ConfigError(f"exits must be a list of stage indices, got {exits!r}")
    bad = [e for e in exits if not _is_int(e) or not 0 <= e < num_stages]
    if bad:
        raise ConfigError(f"exit stage(s) {bad} out of range: this backbone has stages 0..{num_stages - 1}")
    if len(set(exits)) != len(exits):
        raise ConfigError(f"duplicate exit stages in {list(exits)}")
    return sorted(set(exits) | {num_stages - 1})


def check_head_width(head_width: int | None) -> None:
    """``head_width`` is None (default width) or a positive integer."""
    if head_width is not None and (not _is_int(head_width) or head_width < 1):
        raise ConfigError(f"head_width must be a positive integer, got {head_width!r}")


def assemble(stages: Sequence[nn.Module], channels: Sequence[int], reductions: Sequence[int],
             final_head: nn.Module, *, feature_dim: int, exits: Sequence[int] | None, head_width: int | None,
             num_classes: int, in_chans: int, input_size: tuple[int, int]) -> MultiExitNet:
    """Group backbone ``stages`` into segments ending at the exit stages and attach one head per segment.

    channels[s], reductions[s]: output channels and stride of stage s. The deepest exit gets ``final_head``
    (the backbone's classifier); the others get a :class:`BottleneckExitHead` down to the last stage's stride.
    """
    check_head_width(head_width)
    exit_stages = resolve_exits(exits, len(stages))
    segments, heads, start = [], [], 0
    for s in exit_stages:
        segments.append(nn.Sequential(*stages[start:s + 1]))
        start = s + 1
        if s == len(stages) - 1:
            heads.append(final_head)
        else:
            heads.append(BottleneckExitHead(channels[s], reductions[s], reductions[-1], feature_dim, num_classes,
                                            width=head_width))
    return MultiExitNet(segments, heads, exit_stages=exit_stages, input_size=input_size, in_chans=in_chans,
                        num_classes=num_classes)
