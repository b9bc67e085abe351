"""Measuring a mixture-of-experts model: where its router sends real tokens, how many experts a
batch touches, and what a decode step costs beside a dense model of the same active size.

`record_routing` runs a model with an `MoEFeedForward` in every layer over some text, with a
forward hook on each router that keeps the experts it chooses (the top k of its scores, as the
layer itself chooses them). The model is only observed: nothing in it changes.

The analytic counterparts live in the torch-free layer: `llmperf.experts_touched` (uniform
routing) and `llmperf.step_costs`, which charges a decode step the weights of the experts
its batch touches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analytic.layers import experts_touched
from ..units import check_positive
from .hooks import removed_after
from .measure import measure_decode, windows
from .model import MoEFeedForward, Transformer


@dataclass(frozen=True)
class Routing:
    """The experts chosen for each of `tokens` tokens in each layer: choices (layers, tokens, k)."""

    choices: torch.Tensor
    n_experts: int

    @property
    def tokens(self) -> int:
        return self.choices.shape[1]

    def counts(self) -> torch.Tensor:
        """(layers, n_experts): how many token-expert slots each expert received."""
        one_hot = torch.nn.functional.one_hot(self.choices, self.n_experts)
        return one_hot.sum(dim=(1, 2))

    def shares(self) -> torch.Tensor:
        """(layers, n_experts): each expert's share of the slots (uniform: 1 / n_experts)."""
        counts = self.counts().double()
        return counts / counts.sum(dim=1, keepdim=True)

    def touched(self, batch: int, samples: int = 400, seed: int = 0) -> torch.Tensor:
        """(layers,): mean distinct experts chosen by `batch` tokens drawn at random (without
        replacement) from the recorded ones, as `batch` sequences decoding one step each."""
        check_positive("batch", batch, integer=True)
        check_positive("samples", samples, integer=True)
        if batch > self.tokens:
            raise ValueError(f"batch must be <= the {self.tokens} recorded tokens, got {batch}")
        gen = torch.Generator().manual_seed(seed)
        used = torch.nn.functional.one_hot(self.choices, self.n_experts).any(dim=2)  # (L, N, E)
        picks = torch.stack([torch.randperm(self.tokens, generator=gen)[:batch]
                             for _ in range(samples)])  # (samples, batch)
        return used[:, picks].any(dim=2).sum(dim=-1).double().mean(dim=1)


def _moe_layers(model: Transformer) -> list[MoEFeedForward]:
    layers = [block.feed_forward for block in model.layers]
    if not all(isinstance(f, MoEFeedForward) for f in layers):
        raise ValueError(f"model must have an MoE feed-forward in every layer; "
                         f"{model.config.name} has n_experts={model.config.n_experts}")
    return layers


@torch.inference_mode()
def record_routing(model: Transformer, tokens: torch.Tensor, seq_len: int = 256,
                   max_windows: int | None = 4) -> Routing:
    """The experts `model` routes each token of 1-D `tokens` to, in every layer, reading the
    text in windows of seq_len (the first max_windows of them) as `evaluate` does."""
    layers = _moe_layers(model)
    win = windows(tokens, seq_len, max_windows)[:, :-1]
    chosen: list[list[torch.Tensor]] = [[] for _ in layers]

    def keep(index: int, k: int):
        def hook(module, args, output):
            chosen[index].append(output.float().topk(k, dim=-1).indices.reshape(-1, k).cpu())
        return hook

    handles = [f.router.register_forward_hook(keep(i, f.top_k)) for i, f in enumerate(layers)]
    with removed_after(handles):
        model(win.to(model.device))
    return Routing(torch.stack([torch.cat(c) for c in chosen]), model.config.n_experts)


@dataclass(frozen=True)
class DecodeStep:
    """One measured decode step of a batch, beside what the analytic layer counts for it."""

    model: str
    batch: int
    median_s: float
    predicted_bytes: float      # from step_costs: weights of the experts touched, KV, activations
    experts_touched: float      # uniform routing, per layer (1 for a dense model)


def decode_steps(model: Transformer, batches: list[int], context: int = 128,
                 steps: int = 8) -> list[DecodeStep]:
    """Median decode-step time of `model` at each batch size, with `context` tokens cached."""
    cfg = model.config
    rows = []
    for b in batches:
        m = measure_decode(model, context, batch=b, steps=steps)
        touched = experts_touched(b, cfg.n_experts, cfg.experts_per_token) if cfg.is_moe else 1.0
        rows.append(DecodeStep(cfg.name, b, m.timing.median_s, m.costs.total.bytes, touched))
    return rows
