"""Objectives: one small class, four methods as data.

An objective maps the student's multi-exit output (and the teacher's logits, when it has a teacher) to a dict of
named, already-weighted loss terms, e.g. ``{"ce/exit0": …, "kd/exit0": …, "sd/exit0": …, "hint/exit0": …}``.
The training loop sums the dict; it never knows which method it is running.

TSKD, for C exits (index C-1 is the deepest), teacher probabilities p_T, all softened at temperature T::

    L = Σ_i [(1−α)·CE(z_i, y) + α·T²·KL(p_T ‖ p_i)]          (every exit learns labels + teacher)
      + β · Σ_{i<C-1} T²·KL(sg(p_C) ‖ p_i)                     (self-distillation: deepest teaches shallow)
      + λ · Σ_{i<C-1} mean((h_i − sg(h_C))²)                   (hint: shallow head features follow the deepest)

The other methods are the same formula with terms switched off (see :data:`METHODS`): ``kd`` drops the β and λ
terms, ``byot`` the teacher (α = 0), ``ce`` both. Every method trains every exit the model has (a method that left
exits untrained would give early exit and the vote heads at chance); the self-distilling ones need at least two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

from torch import Tensor

from edgekd.core.errors import ConfigError
from edgekd.training.config import METHOD_TERMS, OBJECTIVE_DEFAULTS
from edgekd.training.distill.losses import cross_entropy, hint_l2, kd_kl


@dataclass(frozen=True)
class Objective:
    """The TSKD family. CE (and teacher KD, with ``uses_teacher``) on every exit; ``self_distill`` turns on the β and
    λ terms; ``alpha`` > 0 needs a teacher."""

    name: str
    uses_teacher: bool
    self_distill: bool
    temperature: float = OBJECTIVE_DEFAULTS["temperature"]
    alpha: float = OBJECTIVE_DEFAULTS["alpha"]
    beta: float = OBJECTIVE_DEFAULTS["beta"]
    hint_weight: float = OBJECTIVE_DEFAULTS["hint_weight"]

    @property
    def needs_teacher(self) -> bool:
        return self.uses_teacher and self.alpha > 0

    @property
    def min_exits(self) -> int:
        """Self-distillation teaches shallower exits from the deepest one, so it needs two exits; CE/KD need one."""
        return 2 if self.self_distill else 1

    def check_exits(self, num_exits: int) -> None:
        """Refuse a model this method cannot train as asked (one-line :class:`ConfigError`)."""
        if num_exits < self.min_exits:
            plain = "kd" if self.uses_teacher else "ce"
            raise ConfigError(f"method {self.name} self-distils from the deepest exit into shallower ones and needs at "
                              f"least {self.min_exits} exits; this model has {num_exits} (give --exits more stages, "
                              f"or use --method {plain} for a single-exit model)")

    def hparams(self) -> dict[str, float]:
        """The hyper-parameters that matter for this method (recorded in checkpoints)."""
        d = {k: v for k, v in asdict(self).items() if k in OBJECTIVE_DEFAULTS}
        if not self.uses_teacher:
            d.pop("alpha")
        if not self.self_distill:
            d.pop("beta")
            d.pop("hint_weight")
        if not (self.uses_teacher or self.self_distill):
            d.pop("temperature")
        return d

    def __call__(self, logits: list[Tensor], features: list[Tensor], target: Tensor,
                 teacher_logits: Tensor | None = None, exit_weights: Sequence[float] | None = None
                 ) -> dict[str, Tensor]:
        """Named, weighted terms for one batch. logits/features: per exit, shallow → deep, (B, K) / (B, D).

        ``exit_weights`` (one per exit, default all 1) multiplies every term of exit i (CE, KD, self-distillation,
        hint) by w_i; an exit of weight 0 contributes no term at all (SDN-style per-exit loss weights, and the
        deepest-exit-only phase of ``--phases backbone-first``)."""
        if self.needs_teacher and teacher_logits is None:
            raise ValueError(f"method {self.name!r} needs teacher logits")
        last = len(logits) - 1
        weights = [1.0] * len(logits) if exit_weights is None else [float(w) for w in exit_weights]
        if len(weights) != len(logits):
            raise ValueError(f"{len(weights)} exit weights for {len(logits)} exits")
        ce_weight = 1.0 - self.alpha if self.needs_teacher else 1.0
        terms: dict[str, Tensor] = {}
        for i in range(len(logits)):
            if not weights[i]:
                continue
            terms[f"ce/exit{i}"] = weights[i] * ce_weight * cross_entropy(logits[i], target)
            if self.needs_teacher:
                terms[f"kd/exit{i}"] = weights[i] * self.alpha * kd_kl(logits[i], teacher_logits, self.temperature)
        if self.self_distill:
            deep_logits, deep_feat = logits[last].detach(), features[last].detach()
            for i in range(last):
                if not weights[i]:
                    continue
                terms[f"sd/exit{i}"] = weights[i] * self.beta * kd_kl(logits[i], deep_logits, self.temperature)
                if self.hint_weight:
                    terms[f"hint/exit{i}"] = weights[i] * self.hint_weight * hint_l2(features[i], deep_feat)
        return terms


METHODS: dict[str, Objective] = {name: Objective(name, **terms) for name, terms in METHOD_TERMS.items()}


def build_objective(method: str, **hparams: float | None) -> Objective:
    """The named method with hyper-parameter overrides (None means keep the default)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    given = {k: float(v) for k, v in hparams.items() if v is not None}
    unknown = set(given) - set(OBJECTIVE_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown hyper-parameters for {method}: {sorted(unknown)}")
    obj = replace(METHODS[method], **given)
    if obj.temperature <= 0 or not 0 <= obj.alpha <= 1 or obj.beta < 0 or obj.hint_weight < 0:
        raise ConfigError(f"invalid hyper-parameters for {method}: T>0, 0≤α≤1, β≥0, λ≥0 (got {obj.hparams()})")
    return obj
