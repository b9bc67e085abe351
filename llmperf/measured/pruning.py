"""Pruning the reference model: unstructured masks (magnitude, Wanda, 2:4) and structured
pruning of whole FFN neurons and heads into a genuinely smaller `Transformer`.

Scores, per weight W[i, j] of a linear layer y = x W^T (row i: output i; column j: input j):
- magnitude: |W[i, j]|;
- Wanda (Sun et al., ICLR 2024, https://arxiv.org/abs/2306.11695): |W[i, j]| * ||X_j||_2,
  the norm of input feature j over calibration tokens, compared within each output row.
A mask keeps the highest scores of each row. Pruned weights are set to zero; the tensors keep
their shapes, so a dense kernel does exactly the same work (unstructured sparsity buys no
speed there). The 2:4 pattern keeps 2 of every 4 consecutive inputs of a row, the pattern
NVIDIA's sparse tensor cores run at twice the dense rate.

Structured pruning removes FFN neurons (a row of W_up and W_gate and a column of W_down) and
heads (their rows of W_q, W_k, W_v and their columns of W_o) from every layer, scored on
calibration tokens by the mean size of what each contributes (activation times weight norm),
and builds a `Transformer` of `llmperf.analytic.sparsity.pruned_config`: smaller dense matmuls.
The embedding, norms and LM head are never pruned.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from ..analytic.sparsity import pruned_config
from ..units import check_non_negative
from .hooks import removed_after
from .model import MLP, FeedForward, Transformer

METHODS = ("magnitude", "wanda")
PATTERNS = ("unstructured", "2:4")


def prunable_linears(model: Transformer,
                     ffn_only: bool = False) -> Iterator[tuple[str, nn.Linear]]:
    """(name, layer) of every linear layer inside the decoder blocks (not the LM head), or of
    the FFNs' only."""
    for name, module in model.layers.named_modules():
        if isinstance(module, nn.Linear) and (not ffn_only or ".feed_forward." in f".{name}"):
            yield f"layers.{name}", module


# ---- scores and masks ---------------------------------------------------------------------
def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|."""
    return weight.abs()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W[i, j]| * ||X_j||: the weight's size times its input feature's norm (Wanda)."""
    if input_norm.shape != weight.shape[1:]:
        raise ValueError(f"input_norm must have shape ({weight.shape[1]},) (one norm per input "
                         f"feature), got {tuple(input_norm.shape)}")
    return weight.abs() * input_norm[None, :]


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask (True = keep) removing exactly round(sparsity * columns) of the lowest
    scores from every row, ties broken by position; the overall sparsity is that count over
    the columns."""
    check_non_negative("sparsity", sparsity)
    if sparsity >= 1 or scores.dim() != 2:
        raise ValueError(f"sparsity must be in [0, 1) and scores 2-D, got {sparsity} and "
                         f"shape {tuple(scores.shape)}")
    return _keep_all_but_lowest(scores.argsort(dim=1, stable=True),
                                round(sparsity * scores.shape[1]))


def _keep_all_but_lowest(order: torch.Tensor, pruned: int) -> torch.Tensor:
    """Boolean mask removing, from each row, its first `pruned` columns of `order` (each row's
    columns sorted from the lowest score, as `argsort` gives them)."""
    mask = torch.ones_like(order, dtype=torch.bool)
    mask.scatter_(1, order[:, :pruned], False)
    return mask


def two_four_mask(scores: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping the 2 highest scores of every 4 consecutive inputs of a row."""
    if scores.dim() != 2 or scores.shape[1] % 4:
        raise ValueError(f"scores must be 2-D with a multiple of 4 columns, got shape "
                         f"{tuple(scores.shape)}")
    groups = scores.reshape(scores.shape[0], -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(2, dim=2).indices, True)
    return keep.reshape(scores.shape)


@torch.no_grad()
def input_norms(model: Transformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """||X_j||_2 over every calibration token, for each input feature j of each prunable
    linear layer (the statistic Wanda needs), from one forward pass over tokens (B, T)."""
    sums: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in prunable_linears(model)]
    try:
        model(tokens)
    finally:
        for h in handles:
            h.remove()
    return {name: s.sqrt() for name, s in sums.items()}


def _scores_of(model: Transformer, method: str, calibration: torch.Tensor | None,
               norms: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Wanda's input norms for `method` "wanda" (computed or given), None for "magnitude"."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "magnitude":
        return None
    if calibration is None and norms is None:
        raise ValueError("calibration tokens (or their norms) are required for method 'wanda'")
    return input_norms(model, calibration) if norms is None else norms


@torch.no_grad()
def prune_levels(model: Transformer, sparsities: list[float], method: str = "magnitude",
                 calibration: torch.Tensor | None = None, ffn_only: bool = False,
                 norms: dict[str, torch.Tensor] | None = None) -> list[Transformer]:
    """One copy of `model` per sparsity, each `prune(model, s, method, ...)` (unstructured),
    with each layer's scores sorted once for all the levels."""
    for i, s in enumerate(sparsities):
        check_non_negative(f"sparsities[{i}]", s)
        if s >= 1:
            raise ValueError(f"sparsities must lie in [0, 1), got {s}")
    wanda = _scores_of(model, method, calibration, norms)
    copies = [copy.deepcopy(model) for _ in sparsities]
    layers = [dict(prunable_linears(c, ffn_only)) for c in copies]
    for name, layer in prunable_linears(model, ffn_only):
        w = layer.weight
        scores = wanda_scores(w, wanda[name]) if wanda else magnitude_scores(w)
        order = scores.argsort(dim=1, stable=True)  # lowest first, ties by position
        for s, pruned in zip(sparsities, layers):
            pruned[name].weight.mul_(_keep_all_but_lowest(order, round(s * w.shape[1])))
    return copies


@torch.no_grad()
def prune(model: Transformer, sparsity: float = 0.5, method: str = "magnitude",
          pattern: str = "unstructured", calibration: torch.Tensor | None = None,
          ffn_only: bool = False, norms: dict[str, torch.Tensor] | None = None) -> Transformer:
    """A copy of `model` with every prunable weight (or the FFNs' only) masked: `sparsity` of
    each row removed (pattern "unstructured", `unstructured_mask`), or 2 of every 4 (pattern
    "2:4", sparsity ignored). method "wanda" needs calibration tokens (B, T), or their
    `input_norms` computed once (`norms`) when one model is pruned several times.

    The norms come from one pass of the dense model. Wanda's own code prunes layer by layer
    and measures each layer's inputs on the outputs of the layers already pruned
    (https://github.com/locuslab/wanda, lib/prune.py). Magnitude pruning here compares
    within each row too, as Wanda does; the paper's magnitude baseline compares whole layers."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if pattern == "unstructured":
        check_non_negative("sparsity", sparsity)
        if sparsity >= 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        return prune_levels(model, [sparsity], method, calibration, ffn_only, norms)[0]
    wanda = _scores_of(model, method, calibration, norms)
    pruned = copy.deepcopy(model)
    for name, layer in prunable_linears(pruned, ffn_only):
        w = layer.weight
        w.mul_(two_four_mask(wanda_scores(w, wanda[name]) if wanda else magnitude_scores(w)))
    return pruned


def weight_sparsity(model: Transformer, ffn_only: bool = False) -> float:
    """Fraction of the prunable weights (or of the FFNs') that are exactly zero."""
    zeros = total = 0
    for _, layer in prunable_linears(model, ffn_only):
        zeros += int((layer.weight == 0).sum())
        total += layer.weight.numel()
    return zeros / total


# ---- structured pruning -------------------------------------------------------------------
def _ffn_down(ffn: nn.Module) -> nn.Linear:
    if not isinstance(ffn, (MLP, FeedForward)):
        raise ValueError("structured pruning needs dense FFNs (MLP or SwiGLU), not MoE")
    return ffn.w2


@torch.no_grad()
def importance(model: Transformer, tokens: torch.Tensor) -> tuple[list[torch.Tensor],
                                                                  list[torch.Tensor]]:
    """Per layer, a score for each FFN neuron and each head, from calibration tokens (B, T).

    Neuron j: mean |h_j| over tokens times ||W_down[:, j]||, the size of what it adds to the
    residual stream. Head h: mean ||o_h|| (its attention output) times ||W_o[:, head h]||_F.
    """
    neurons: dict[int, torch.Tensor] = {}
    heads: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(model.layers):
        down, wo, H = _ffn_down(block.feed_forward), block.attention.wo, block.attention.n_heads

        def ffn_hook(module, inputs, i=i):
            h = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            neurons[i] = h.abs().mean(0) * module.weight.float().norm(dim=0)

        def head_hook(module, inputs, i=i, H=H):
            o = inputs[0].reshape(-1, H, inputs[0].shape[-1] // H).float()
            w = module.weight.float().reshape(module.weight.shape[0], H, -1)
            heads[i] = o.norm(dim=-1).mean(0) * w.norm(dim=(0, 2))

        handles += [down.register_forward_pre_hook(ffn_hook),
                    wo.register_forward_pre_hook(head_hook)]
    with removed_after(handles):
        model(tokens)
    n = len(model.layers)
    return [neurons[i] for i in range(n)], [heads[i] for i in range(n)]


def top_indices(scores: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """The `keep` highest-scoring indices of each layer's scores, in increasing order."""
    if not 1 <= keep <= len(scores[0]):
        raise ValueError(f"keep must be between 1 and {len(scores[0])}, got {keep}")
    return [s.topk(keep).indices.sort().values for s in scores]


def _head_rows(heads: torch.Tensor, d_head: int) -> torch.Tensor:
    return (heads[:, None] * d_head + torch.arange(d_head, device=heads.device)).reshape(-1)


def _ffn_rows(ffn: nn.Module, neurons: torch.Tensor) -> torch.Tensor:
    """Rows of the FFN's first matrix that serve `neurons`: w1's, or w13's gate and up rows."""
    if isinstance(ffn, FeedForward):
        return torch.cat([neurons, neurons + ffn.w2.in_features])
    return neurons


def _state_dict_slices(model: Transformer, neurons: list[torch.Tensor],
                       heads: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each layer's weights restricted to the kept neurons and heads (everything else kept)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    H, Hkv, D = model.config.n_heads, model.config.n_kv_heads, model.config.d_head
    for i, block in enumerate(model.layers):
        p = f"layers.{i}."
        rows = _head_rows(heads[i], D)
        kv = rows if Hkv == H else torch.arange(Hkv * D, device=rows.device)  # GQA: all kept
        qkv = torch.cat([rows, kv + H * D, kv + H * D + Hkv * D])
        state[p + "attention.wqkv.weight"] = state[p + "attention.wqkv.weight"][qkv]
        state[p + "attention.wo.weight"] = state[p + "attention.wo.weight"][:, rows]
        ffn = block.feed_forward
        first = "w13" if isinstance(ffn, FeedForward) else "w1"
        state[p + f"feed_forward.{first}.weight"] = \
            state[p + f"feed_forward.{first}.weight"][_ffn_rows(ffn, neurons[i])]
        state[p + "feed_forward.w2.weight"] = state[p + "feed_forward.w2.weight"][:, neurons[i]]
    return state


@torch.no_grad()
def shrink(model: Transformer, neurons: list[torch.Tensor],
           heads: list[torch.Tensor]) -> Transformer:
    """A smaller Transformer keeping, in layer i, FFN neurons neurons[i] and heads heads[i]
    (the same count in every layer): its matmuls are genuinely narrower."""
    c = model.config
    if c.bias:
        raise ValueError("model must have no biases (config.bias False) to be shrunk")
    if len({len(n) for n in neurons}) != 1 or len({len(h) for h in heads}) != 1:
        raise ValueError("neurons and heads must keep the same count in every layer")
    small = Transformer(pruned_config(c, len(neurons[0]), len(heads[0])), device=model.device,
                        dtype=model.dtype, max_seq_len=model.max_seq_len)
    small.load_state_dict(_state_dict_slices(model, neurons, heads), strict=True)
    return small.eval()


@torch.no_grad()
def mask_structured(model: Transformer, neurons: list[torch.Tensor],
                    heads: list[torch.Tensor]) -> Transformer:
    """A copy of `model` of the same shape with every neuron and head not kept zeroed
    (their W_down columns and W_o columns): the same function as `shrink`'s model."""
    masked = copy.deepcopy(model)
    D = model.config.d_head
    for i, block in enumerate(masked.layers):
        keep_cols = torch.zeros(block.attention.wo.in_features, dtype=torch.bool,
                                device=model.device)
        keep_cols[_head_rows(heads[i], D)] = True
        block.attention.wo.weight.mul_(keep_cols)
        down = _ffn_down(block.feed_forward)
        keep = torch.zeros(down.in_features, dtype=torch.bool, device=model.device)
        keep[neurons[i]] = True
        down.weight.mul_(keep)
    return masked


def prune_structured(model: Transformer, tokens: torch.Tensor, d_ff: int,
                     n_heads: int | None = None) -> Transformer:
    """The smaller model keeping the d_ff most important neurons and n_heads most important
    heads of every layer (`importance` on calibration tokens (B, T))."""
    n_heads = model.config.n_heads if n_heads is None else n_heads
    neuron_scores, head_scores = importance(model, tokens)
    return shrink(model, top_indices(neuron_scores, d_ff), top_indices(head_scores, n_heads))
