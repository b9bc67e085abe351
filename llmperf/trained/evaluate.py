"""Validation loss, perplexity and agreement between two models, on held-out tokens.

The tokens are cut into consecutive windows of seq_len + 1; each window predicts its last
seq_len tokens from the ones before (so every prediction sees up to seq_len - 1 tokens of
context, none from another window). Loss is the mean negative log-likelihood in nats per
token; bits per token = nats / ln 2; perplexity = exp(nats).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..measured.measure import windows
from ..measured.model import Transformer


@dataclass(frozen=True)
class Evaluation:
    loss_nats: float
    tokens: int

    @property
    def loss_bits(self) -> float:
        return self.loss_nats / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss_nats)


@torch.inference_mode()
def _logits(model: Transformer, win: torch.Tensor, batch: int) -> list[torch.Tensor]:
    return [model(win[i:i + batch, :-1]).float() for i in range(0, len(win), batch)]


@torch.inference_mode()
def evaluate(model: Transformer, tokens: torch.Tensor, seq_len: int = 256,
             max_windows: int | None = None, batch: int = 16) -> Evaluation:
    """Mean next-token loss of `model` on `tokens` (see the module docstring)."""
    win = windows(tokens, seq_len, max_windows)
    total = 0.0
    for i, logits in enumerate(_logits(model, win, batch)):
        target = win[i * batch:(i + 1) * batch, 1:]
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
    n = win.shape[0] * seq_len
    return Evaluation(total / n, n)


@dataclass(frozen=True)
class Agreement:
    greedy: float    # fraction of positions where both models' argmax is the same token
    overlap: float   # mean sum_x min(p(x), q(x)): speculative sampling's acceptance at T = 1
    tokens: int


@torch.inference_mode()
def agreement(model: Transformer, reference: Transformer, tokens: torch.Tensor,
              seq_len: int = 256, max_windows: int | None = None,
              batch: int = 16) -> Agreement:
    """How often `model` predicts what `reference` predicts, position by position on `tokens`.

    greedy estimates the acceptance rate of greedy speculative decoding with `model` as the
    draft (exact when the text is the reference's own greedy output); overlap is the expected
    acceptance of speculative sampling at temperature 1 (Leviathan et al., 2023:
    alpha = E[sum_x min(p, q)])."""
    win = windows(tokens, seq_len, max_windows)
    same, overlap = 0.0, 0.0
    for a, b in zip(_logits(model, win, batch), _logits(reference, win, batch)):
        same += float((a.argmax(-1) == b.argmax(-1)).sum())
        overlap += float(torch.minimum(a.softmax(-1), b.softmax(-1)).sum(-1).sum())
    n = win.shape[0] * seq_len
    return Agreement(same / n, overlap / n, n)
