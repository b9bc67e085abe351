"""Early exit: stop a token at the first layer whose prediction is already confident.

Each layer's output goes through the model's own final norm and LM head (read through
forward hooks: the model is unchanged), giving a next-token distribution per layer. A token
exits at the first layer whose top probability reaches `threshold`, and takes that layer's
prediction; the last layer always answers.

What this measures is the best case, an oracle: the deeper layers of later tokens still see
the keys and values every earlier token would have had at full depth. A real decoder must
supply them for exited tokens (copy the exiting hidden state upward, as CALM does, or compute
the skipped layers later), and a batch runs until its slowest token exits
(`llmperf.analytic.sparsity.batch_expected_layers`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..units import check_positive
from .hooks import removed_after
from .model import Transformer


def lm_head(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """Logits of hidden states x (..., d_model): the final norm, then the output matrix."""
    x = model.norm(x)
    return F.linear(x, model.tok_embeddings.weight) if model.output is None else model.output(x)


@torch.no_grad()
def layer_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """(L, B, T, vocab) logits read after each of the L layers, for tokens (B, T); the last
    equals the model's own output."""
    outputs: dict[int, torch.Tensor] = {}
    handles = [block.register_forward_hook(
        lambda m, a, out, i=i: outputs.__setitem__(i, out)) for i, block in
        enumerate(model.layers)]
    with removed_after(handles):
        model(tokens)
    return torch.stack([lm_head(model, outputs[i]).float() for i in range(len(model.layers))])


def exit_layers(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """For logits (L, ...) per layer, the 0-based layer at which each position exits: the
    first whose top probability is >= threshold, else the last (L - 1)."""
    check_positive("threshold", threshold)
    if threshold > 1:
        raise ValueError(f"threshold must be at most 1 (a probability), got {threshold}")
    confident = logits.softmax(dim=-1).amax(dim=-1) >= threshold       # (L, ...)
    confident[-1] = True
    return confident.float().argmax(dim=0)                              # first True


@dataclass(frozen=True)
class ExitPoint:
    """Early exit at one confidence threshold, over every position evaluated."""

    threshold: float
    exit_rate: float          # fraction of positions that exit before the last layer
    mean_layers: float        # layers computed per position, on average
    exit_fractions: tuple[float, ...]  # fraction exiting after layer 1, 2, ..., L
    loss_nats: float          # next-token loss with each position's exit-layer logits
    agreement: float          # fraction whose exit prediction is the full model's argmax

    @property
    def layers_saved(self) -> float:
        """Fraction of layer computations skipped: 1 - mean_layers / L."""
        return 1.0 - self.mean_layers / len(self.exit_fractions)


def early_exit_curve(logits: torch.Tensor, targets: torch.Tensor,
                     thresholds: Sequence[float]) -> list[ExitPoint]:
    """Exit statistics of per-layer logits (L, B, T, V) against next tokens (B, T)."""
    if logits.shape[1:-1] != targets.shape:
        raise ValueError(f"targets must have shape {tuple(logits.shape[1:-1])}, got "
                         f"{tuple(targets.shape)}")
    L = logits.shape[0]
    log_probs = logits.log_softmax(dim=-1)
    final = logits[-1].argmax(dim=-1)
    points = []
    for t in thresholds:
        layer = exit_layers(logits, t)                                   # (B, T)
        chosen = log_probs.gather(0, layer[None, ..., None].expand(1, *log_probs.shape[1:]))[0]
        loss = -chosen.gather(-1, targets[..., None]).mean()
        counts = torch.bincount(layer.reshape(-1), minlength=L).float() / layer.numel()
        points.append(ExitPoint(
            float(t), float((layer < L - 1).float().mean()), float((layer + 1).float().mean()),
            tuple(float(c) for c in counts), float(loss),
            float((chosen.argmax(-1) == final).float().mean())))
    return points
