"""The distillation loss: T^2 KL(teacher^T || student^T), zero when the two agree, its hand
computation, its gradient, and what it refuses."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from llmperf.measured.distill import distillation_loss  # noqa: E402


def test_zero_when_student_equals_teacher_and_positive_otherwise():
    t = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    assert float(distillation_loss(t, t.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(t + 3.0, t)) == pytest.approx(0.0, abs=1e-6)  # softmax shift
    assert float(distillation_loss(t.flip(-1), t)) > 0.01


def test_matches_a_hand_computation():
    student, teacher, T = torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]]), 2.0
    p = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]   # softmax([1, 0])
    q = [p[1], p[0]]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert float(distillation_loss(student, teacher, T)) == pytest.approx(T * T * kl, rel=1e-6)
    # positions are averaged: two identical rows give the same value
    two = distillation_loss(student.repeat(2, 1), teacher.repeat(2, 1), T)
    assert float(two) == pytest.approx(T * T * kl, rel=1e-6)


def test_gradient_moves_the_student_toward_the_teacher():
    teacher = torch.tensor([[3.0, 0.0, 0.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, 1.0).backward()
    g = student.grad[0]
    assert g[0] < 0 and g[1] > 0 and g[2] > 0   # descent raises the teacher's favourite
    # d/dz of T^2 KL at temperature T is T (q - p): check at T = 1
    p = torch.softmax(teacher, -1)[0]
    assert torch.allclose(g, torch.softmax(student.detach(), -1)[0] - p, atol=1e-6)


def test_teacher_gets_no_gradient():
    teacher = torch.randn(4, 6, requires_grad=True)
    student = torch.randn(4, 6, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_bad_inputs_are_rejected():
    x = torch.zeros(2, 4)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            distillation_loss(x, x, bad)
    with pytest.raises(ValueError, match="one shape"):
        distillation_loss(x, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="vocabulary"):
        distillation_loss(torch.zeros(3, 1), torch.zeros(3, 1))
