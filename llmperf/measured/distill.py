"""The distillation loss: a student learns the teacher's softened next-token distribution.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015,
https://arxiv.org/abs/1503.02531): divide both models' logits by a temperature T > 1, so the
teacher's small probabilities (which wrong tokens are nearly right) carry signal, and match
the student's softened distribution to the teacher's with a KL divergence. The gradient of
the softened term scales as 1/T^2, so the term is multiplied by T^2 to keep its weight
independent of T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..units import check_positive


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 2.0) -> torch.Tensor:
    """T^2 KL(p_T || q_T), averaged over positions: a scalar tensor.

    p_T = softmax(teacher_logits / T), q_T = softmax(student_logits / T), both over the last
    dimension (the vocabulary); every other dimension indexes positions. KL(p || q) =
    sum_x p(x) (log p(x) - log q(x)) >= 0, zero exactly when q = p. The teacher gets no
    gradient (it is detached); the student's logits may require one.
    """
    check_positive("temperature", temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have one shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if student_logits.dim() < 1 or student_logits.shape[-1] < 2:
        raise ValueError("logits must have a last (vocabulary) dimension of at least 2, got "
                         f"shape {tuple(student_logits.shape)}")
    V = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).reshape(-1, V)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1).reshape(-1, V)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return temperature ** 2 * kl
