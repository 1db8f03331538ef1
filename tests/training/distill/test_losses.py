"""Each loss term against a hand computation on tiny tensors, and the objectives' term structure."""

import math

import numpy as np
import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.training.distill import build_objective
from edgekd.training.distill.losses import cross_entropy, hint_l2, kd_kl


def _log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T_LOGITS = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
Y = [1, 2]


def test_cross_entropy_matches_hand_computation():
    expected = -np.mean([_log_softmax(S)[0, 1], _log_softmax(S)[1, 2]])
    got = cross_entropy(torch.tensor(S), torch.tensor(Y)).item()
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_kl_matches_hand_computation(temperature):
    ls = _log_softmax(np.array(S) / temperature)
    lt = _log_softmax(np.array(T_LOGITS) / temperature)
    expected = np.mean((np.exp(lt) * (lt - ls)).sum(axis=1)) * temperature**2
    got = kd_kl(torch.tensor(S), torch.tensor(T_LOGITS), temperature).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert kd_kl(torch.tensor(S), torch.tensor(S), temperature).item() == pytest.approx(0.0, abs=1e-7)


def test_hint_l2_matches_hand_computation():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert hint_l2(a, b).item() == pytest.approx((1 + 0 + 4 + 9) / 4)


def _outputs(n_exits=3, batch=2, k=3, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(batch, k, generator=g, requires_grad=True) for _ in range(n_exits)]
    feats = [torch.randn(batch, d, generator=g, requires_grad=True) for _ in range(n_exits)]
    return logits, feats


def test_tskd_terms_equal_formula():
    logits, feats = _outputs()
    y = torch.tensor([0, 2])
    teacher = torch.randn(2, 3)
    obj = build_objective("tskd", temperature=2.0, alpha=0.4, beta=0.3, hint_weight=0.7)
    terms = obj(logits, feats, y, teacher)
    assert sorted(terms) == sorted(
        [f"ce/exit{i}" for i in range(3)] + [f"kd/exit{i}" for i in range(3)]
        + ["sd/exit0", "sd/exit1", "hint/exit0", "hint/exit1"]
    )
    expected = sum(0.6 * cross_entropy(z, y) + 0.4 * kd_kl(z, teacher, 2.0) for z in logits)
    expected = expected + sum(0.3 * kd_kl(logits[i], logits[2].detach(), 2.0) for i in range(2))
    expected = expected + sum(0.7 * hint_l2(feats[i], feats[2].detach()) for i in range(2))
    assert sum(terms.values()).item() == pytest.approx(expected.item(), rel=1e-6)


def test_self_distillation_targets_are_detached():
    logits, feats = _outputs()
    obj = build_objective("byot")
    terms = obj(logits, feats, torch.tensor([0, 1]))
    (terms["sd/exit0"] + terms["hint/exit0"]).backward()
    assert logits[2].grad is None and feats[2].grad is None  # the deepest exit is only a target here
    assert logits[0].grad is not None and feats[0].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "method,expected",
    [  # every method trains every exit: ce and kd on three exits are multi-exit CE (SDN) and multi-exit KD
        ("ce", {"ce/exit0", "ce/exit1", "ce/exit2"}),
        ("kd", {"ce/exit0", "ce/exit1", "ce/exit2", "kd/exit0", "kd/exit1", "kd/exit2"}),
        ("byot", {"ce/exit0", "ce/exit1", "ce/exit2", "sd/exit0", "sd/exit1", "hint/exit0", "hint/exit1"}),
    ],
)
def test_methods_are_terms_switched_off(method, expected):
    logits, feats = _outputs()
    obj = build_objective(method)
    teacher = torch.randn(2, 3) if obj.needs_teacher else None
    terms = obj(logits, feats, torch.tensor([0, 1]), teacher)
    assert set(terms) == expected
    if method == "kd":  # (1-α)·CE + α·KD with the default α
        assert terms["ce/exit2"].item() == pytest.approx(0.5 * cross_entropy(logits[2], torch.tensor([0, 1])).item())


def test_missing_teacher_and_bad_hparams_are_clear_errors():
    logits, feats = _outputs()
    with pytest.raises(ValueError, match="teacher"):
        build_objective("tskd")(logits, feats, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="unknown method"):
        build_objective("nope")
    with pytest.raises(ConfigError, match="invalid"):
        build_objective("tskd", alpha=1.5)
    assert not build_objective("tskd", alpha=0.0).needs_teacher
    assert math.isclose(build_objective("kd").hparams()["temperature"], 4.0)


@pytest.mark.parametrize("method", ["ce", "kd", "byot", "tskd"])
def test_every_method_sends_a_gradient_to_every_exit(method):
    """The shallowest exit's logits get a non-zero gradient from every method (they stayed at chance when ce and kd
    trained only the deepest exit of a multi-exit model)."""
    logits, feats = _outputs()
    obj = build_objective(method)
    teacher = torch.randn(2, 3) if obj.needs_teacher else None
    sum(obj(logits, feats, torch.tensor([0, 1]), teacher).values()).backward()
    for i, z in enumerate(logits):
        assert z.grad is not None and z.grad.abs().sum() > 0, f"{method}: exit {i} gets no gradient"


def test_self_distillation_refuses_a_single_exit_and_names_the_fix():
    for method, plain in (("byot", "ce"), ("tskd", "kd")):
        with pytest.raises(ConfigError, match=f"needs at least 2 exits.*--method {plain}"):
            build_objective(method).check_exits(1)
        build_objective(method).check_exits(2)
    for method in ("ce", "kd"):
        build_objective(method).check_exits(1)


def test_every_method_has_help_text():
    from edgekd.training.config import METHOD_HELP, METHOD_TERMS

    assert list(METHOD_HELP) == list(METHOD_TERMS)
