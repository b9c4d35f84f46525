"""Latency budgets, the differentiable expected latency and the loss forms."""
import math

import pytest
import torch

from qnas.errors import QnasError
from qnas.nas.latency import LatencyLoss, entropy, expected_latency_ms, hand_table, masked_probs
from qnas.units import parse_budgets, parse_latency


@pytest.mark.parametrize("text, ms", [("300ms", 300.0), ("0.3s", 300.0), ("300000us", 300.0),
                                      ("2.5ms", 2.5), (" 3MS ", 3.0), ("1e3us", 1.0)])
def test_parse_latency_accepts_the_three_units(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["300xs", "-5ms", "0ms", "300", "ms", "nanms", "infms", "",
                                  "3 00ms", "0.0s"])
def test_parse_latency_refuses_everything_else_and_names_the_forms(text):
    with pytest.raises(QnasError) as err:
        parse_latency(text)
    message = str(err.value)
    assert "\n" not in message
    assert "300ms" in message and "0.3s" in message and "300000us" in message


def _toy_table(mask=None):
    ms = torch.tensor([[1.0, 4.0, 0.0], [2.0, 7.0, 0.5], [3.0, 1.5, 9.0]], dtype=torch.float64)
    return hand_table(ms, fixed_ms=2.0, mask=mask)


def test_expected_latency_value_and_gradient_equal_the_softmax_jacobian():
    table = _toy_table()
    alpha = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.0, -1.0], [0.0, 0.5, 0.2]],
                         requires_grad=True)
    expected = expected_latency_ms(alpha, table)
    p = torch.softmax(alpha.detach().double(), 1)
    lut = table.ms
    assert expected.item() == pytest.approx(2.0 + (p * lut).sum().item(), rel=1e-12)
    expected.backward()
    # ∂E/∂α_lm = p_lm (LUT_lm − Σ_k p_lk LUT_lk)
    analytic = p * (lut - (p * lut).sum(1, keepdim=True))
    assert alpha.grad.abs().min() > 0            # the gradient reaches every α
    torch.testing.assert_close(alpha.grad.double(), analytic, rtol=1e-6, atol=1e-9)


def test_expected_latency_ignores_disallowed_ops_and_their_gradient_is_zero():
    mask = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    table = _toy_table(mask)
    alpha = torch.randn(3, 3, requires_grad=True)
    expected = expected_latency_ms(alpha, table)
    p = masked_probs(alpha.detach().double(), mask)
    assert p[~mask].eq(0).all()
    assert expected.item() == pytest.approx(2.0 + (p * table.ms).sum().item(), rel=1e-12)
    expected.backward()
    assert alpha.grad[~mask].eq(0).all() and alpha.grad[mask].abs().min() > 0
    analytic = p * (table.ms - (p * table.ms).sum(1, keepdim=True))
    torch.testing.assert_close(alpha.grad.double(), analytic, rtol=1e-6, atol=1e-9)


def test_loss_forms_values():
    ce = torch.tensor(0.8)
    expected = torch.tensor(360.0, dtype=torch.float64)
    assert LatencyLoss("add-linear", 300.0)(ce, expected).item() == pytest.approx(0.8 + 0.1 * 0.2)
    assert LatencyLoss("mul-log", 300.0, beta=0.6)(ce, expected).item() == pytest.approx(
        0.8 * (360 / 300) ** 0.6, rel=1e-6)
    hinge = LatencyLoss("hinge", 300.0, lam=0.5)
    assert hinge(ce, expected).item() == pytest.approx(0.8 + 0.5 * 0.2)
    assert hinge(ce, torch.tensor(250.0, dtype=torch.float64)).item() == pytest.approx(0.8)


@pytest.mark.parametrize("form", ["add-linear", "mul-log", "hinge"])
def test_every_loss_form_pushes_alpha_toward_cheaper_ops_when_over_budget(form):
    table = _toy_table()
    alpha = torch.zeros(3, 3, requires_grad=True)
    loss = LatencyLoss(form, 3.0)(torch.tensor(1.0), expected_latency_ms(alpha, table))
    loss.backward()
    # descending the gradient raises the probability of each layer's cheapest op
    cheapest = table.ms.argmin(1)
    assert (alpha.grad.gather(1, cheapest[:, None]) < 0).all()


def test_loss_refuses_bad_settings():
    with pytest.raises(QnasError, match="add-linear, mul-log, hinge"):
        LatencyLoss("square", 300.0)
    with pytest.raises(QnasError, match="must be positive"):
        LatencyLoss("mul-log", 0.0)
    LatencyLoss("hinge", 0.5)   # every form takes sub-millisecond budgets


@pytest.mark.parametrize("target", [3.0, 0.5])
def test_mul_log_is_finite_and_monotone_for_any_budget(target):
    """GPU budgets: children of 0.06–4 ms; E[LAT] far below 1 ms and far below the budget."""
    loss = LatencyLoss("mul-log", target, beta=0.6)
    ce = torch.tensor(0.7, dtype=torch.float64)
    values = []
    for expected_ms in (0.01, 0.06, 0.5, 0.999, 1.0, 1.001, 3.0, 40.0):
        expected = torch.tensor(expected_ms, dtype=torch.float64, requires_grad=True)
        value = loss(ce, expected)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(expected.grad), expected_ms
        assert expected.grad > 0                       # more latency, more loss, everywhere
        values.append(value.item())
    assert values == sorted(values) and len(set(values)) == len(values)
    assert loss(ce, torch.tensor(target, dtype=torch.float64)).item() == pytest.approx(0.7)


def test_entropy_is_log_k_when_uniform():
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    assert entropy(torch.zeros(2, 4), mask) == pytest.approx((math.log(4) + math.log(2)) / 2)
