"""Speculative decoding: the expectations, and the verification step that keeps the target exact.

A cheap *draft* proposes gamma tokens; the *target* scores all of them in one forward pass over
gamma + 1 positions, and `verify` keeps a prefix of the drafts and adds one token of its own,
so that what comes out is distributed exactly as the target's own samples (Leviathan, Kalman
and Matias, ICML 2023, https://arxiv.org/abs/2211.17192, Algorithm 1; Chen et al. 2023,
https://arxiv.org/abs/2302.01318, Algorithm 2).

The analytic half assumes, as Leviathan et al. do, that each drafted token is accepted with the
same probability alpha, independently of the others:

- tokens per target step: E = 1 + alpha + ... + alpha^gamma = (1 - alpha^(gamma+1)) / (1 - alpha);
- wall-time speedup, with one draft step costing c target steps: E / (gamma c + 1).

The module imports only the torch-free analytic layer; `verify` imports torch when it is called.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from .cost import attention_scores_cost, attention_values_cost, fused_attention_cost, softmax_cost
from .hardware import Accelerator
from .layers import ATTENTION, OpRow, StepCosts, step_costs
from .models import ModelConfig, get_model
from .units import check_non_negative, check_positive

if TYPE_CHECKING:
    import torch

PROBABILITY_TOLERANCE = 1e-3  # |sum(p) - 1| allowed: fp32 softmax over 1e5 ids sums within 1e-5


def _check_alpha(alpha: float) -> None:
    """alpha is a probability: 1 is allowed (a draft equal to the target), and is the limit."""
    check_non_negative("alpha", alpha)
    if alpha > 1:
        raise ValueError(f"alpha must lie in [0, 1] (an acceptance probability), got {alpha!r}")


def _check_gamma(gamma: int) -> None:
    check_positive("gamma", gamma, integer=True)


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """Expected tokens one target step emits: (1 - alpha^(gamma+1)) / (1 - alpha).

    The accepted drafts form a truncated geometric run (the i-th draft survives with
    probability alpha^i), plus the one token the target always adds. Summed as the series
    1 + alpha + ... + alpha^gamma, so alpha = 1 gives its limit gamma + 1 with no division.
    """
    _check_alpha(alpha)
    _check_gamma(gamma)
    return math.fsum(alpha**i for i in range(int(gamma) + 1))


def speculative_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Wall-time speedup over plain decoding: E(alpha, gamma) / (gamma * c + 1).

    One speculative step runs the draft gamma times (c target steps each) and the target
    once; the target's step over gamma + 1 positions is assumed to cost as much as a
    one-token step (true while the step is memory bound: batch 1 decode).
    """
    check_non_negative("cost_ratio", cost_ratio)
    return expected_tokens_per_step(alpha, gamma) / (gamma * cost_ratio + 1)


def best_gamma(alpha: float, cost_ratio: float, max_gamma: int = 64) -> int:
    """The gamma in 1..max_gamma with the largest `speculative_speedup` (the smallest on a tie),
    or 0 when no gamma beats plain decoding.

    Some gamma gives a speedup above 1 exactly when alpha > c: at gamma = 1 the speedup is
    (1 + alpha) / (1 + c), and when alpha <= c every term alpha^i <= c, so E <= 1 + gamma c.
    With c = 0 the speedup grows with gamma forever (for alpha > 0), hence the cap.
    """
    _check_alpha(alpha)
    check_non_negative("cost_ratio", cost_ratio)
    check_positive("max_gamma", max_gamma, integer=True)
    speedups = {g: speculative_speedup(alpha, g, cost_ratio) for g in range(1, int(max_gamma) + 1)}
    best = max(speedups, key=lambda g: (speedups[g], -g))
    return best if speedups[best] > 1 else 0


def acceptance_rate(accepted: int, rejected: int) -> float:
    """The alpha that explains observed steps best: accepted / (accepted + rejected).

    Each step accepts a run of drafts and stops at the first rejection (or at gamma); under
    the constant-alpha model that run is geometric, whose maximum-likelihood alpha is the
    share of drafts examined that were accepted.
    """
    check_non_negative("accepted", accepted, integer=True)
    check_non_negative("rejected", rejected, integer=True)
    if accepted + rejected == 0:
        raise ValueError("accepted + rejected must be positive: no draft was examined")
    return accepted / (accepted + rejected)


def _check_probs(name: str, probs: torch.Tensor, rows: int, vocab: int | None) -> None:
    import torch

    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] != rows \
            or (vocab is not None and probs.shape[1] != vocab) or not probs.is_floating_point():
        want = f"({rows}, {'V' if vocab is None else vocab})"
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"{name} must be a float tensor of shape {want}, got {got}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    err = float((probs.double().sum(dim=-1) - 1).abs().max())
    if err > PROBABILITY_TOLERANCE:
        raise ValueError(f"{name}: each row must sum to 1 (within {PROBABILITY_TOLERANCE}), "
                         f"a row is {err:.3g} away")


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor,
           draft_tokens: torch.Tensor | list[int],
           generator: torch.Generator | None = None) -> list[int]:
    """The tokens one speculative step emits: the accepted drafts, then one token more.

    target_probs (gamma + 1, V): the target's next-token distribution p_i after the prefix and
    the first i drafts; draft_probs (gamma, V): the draft's q_i, from which draft_tokens
    (gamma,) were drawn. Draft i is accepted with probability min(1, p_i(x)/q_i(x)); at the
    first rejection the step ends with a token drawn from max(0, p_i - q_i), normalized;
    when all gamma are accepted it ends with a draw from p_gamma. The emitted tokens then
    follow the target's distribution exactly, whatever q is. A deterministic draft (an
    n-gram lookup) has a one-hot q; greedy decoding is the case where p is one-hot too.
    """
    import torch

    tokens = torch.as_tensor(draft_tokens)
    if tokens.dim() != 1 or tokens.numel() < 1 or tokens.is_floating_point():
        raise ValueError(f"draft_tokens must be a 1-d integer sequence of gamma >= 1 ids, got "
                         f"shape {tuple(tokens.shape)}, dtype {tokens.dtype}")
    gamma = tokens.numel()
    _check_probs("draft_probs", draft_probs, gamma, None)
    vocab = draft_probs.shape[1]
    _check_probs("target_probs", target_probs, gamma + 1, vocab)
    tokens = tokens.to(torch.int64).cpu()
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise ValueError(f"draft_tokens must lie in [0, {vocab}), got {tokens.tolist()}")
    p, q = target_probs.detach().cpu().double(), draft_probs.detach().cpu().double()
    rows = torch.arange(gamma)
    p_x, q_x = p[rows, tokens], q[rows, tokens]
    if bool((q_x <= 0).any()):
        raise ValueError("draft_probs must give each drafted token a probability > 0 "
                         "(the draft drew it)")
    u = torch.rand(gamma, generator=generator, dtype=torch.float64)
    rejected = (u * q_x >= p_x).nonzero()  # accept when u < p/q, i.e. with probability min(1, p/q)
    n = int(rejected[0]) if rejected.numel() else gamma
    if n == gamma:
        last = p[gamma]
    else:
        last = (p[n] - q[n]).clamp(min=0)
        if float(last.sum()) <= 0:  # p == q up to rounding: a rejection then has probability 0
            last = p[n]
    extra = int(torch.multinomial(last / last.sum(), 1, generator=generator))
    return tokens[:n].tolist() + [extra]


def _append_attention_rows(m: ModelConfig, batch: int, tokens: int, context: int, dtype: str,
                           kv_dtype: str, attention: str) -> tuple[OpRow, ...]:
    """Attention of `tokens` new queries per sequence against its context + tokens keys (the
    cache capped by a sliding window, as a decode step's is), in `step_costs`'s row names."""
    sizes = dict(kv_len=m.cached_tokens(context + tokens), heads=m.n_heads, batch=batch,
                 dtype=dtype)
    tensors = dict(sizes, kv_heads=m.n_kv_heads, kv_dtype=kv_dtype)
    L = m.n_layers
    if attention == "fused":
        cost = fused_attention_cost(tokens, m.d_head, causal=True, **tensors)
        return (OpRow("attention", ATTENTION, cost * L, L),)
    return (OpRow("qk", ATTENTION, attention_scores_cost(tokens, m.d_head, **tensors) * L, L),
            OpRow("softmax", ATTENTION, softmax_cost(tokens, **sizes) * L, L),
            OpRow("sv", ATTENTION, attention_values_cost(tokens, m.d_head, **tensors) * L, L))


def verify_step_costs(model: ModelConfig | str, batch: int, tokens_per_sequence: int,
                      context: int, dtype: str = "fp16", kv_dtype: str | None = None,
                      attention: str = "standard") -> StepCosts:
    """Per-operator counts of one target step over `tokens_per_sequence` = T new tokens for
    each of `batch` sequences holding `context` cached tokens (an *append*; T = gamma + 1 is
    the verification).

    `step_costs` counts a prefill (no cache) and a decode step (one token per sequence), not
    this step, so it is built from them: every row but attention is `step_costs`'s decode
    step for batch * T tokens (each weight read once, every expert the batch * T tokens
    touch, the LM head for every position, since verification needs the target's logits at
    all of them); the attention rows are T queries per sequence against its context + T
    keys, each sequence's K and V read once (`llmperf.cost`, masked scores counted by the
    standard algorithm, skipped by the fused one). With T = 1 every row equals `step_costs`'s
    decode step (tested).
    """
    check_positive("batch", batch, integer=True)
    check_positive("tokens_per_sequence", tokens_per_sequence, integer=True)
    check_positive("context", context, integer=True)
    m, T = get_model(model), int(tokens_per_sequence)
    step = step_costs(m, "decode", batch * T, context, dtype, kv_dtype, attention)
    attn = _append_attention_rows(m, int(batch), T, int(context), step.dtype, step.kv_dtype,
                                  attention)
    rows = [r for r in step.rows if r.name not in {a.name for a in attn}]
    at = next(i for i, r in enumerate(step.rows) if r.name == attn[0].name)
    rows[at:at] = attn
    return dataclasses.replace(step, phase=f"append of {T}", batch=int(batch), rows=tuple(rows))


def verify_step_time(model: ModelConfig | str, accelerator: Accelerator | str, batch: int,
                     tokens_per_sequence: int, context: int, dtype: str = "fp16",
                     kv_dtype: str | None = None, attention: str = "standard") -> float:
    """Roofline seconds of `verify_step_costs`: each operator at max(FLOPs / peak,
    bytes / bandwidth), summed, as `decode_step_time` does (equal to it at T = 1).

    At a small batch the step over gamma + 1 positions reads the same weights and KV cache as
    a decode step and costs about as much (an MoE excepted: more tokens touch more experts);
    once batch * (gamma + 1) tokens make the products compute bound it costs up to gamma + 1
    decode steps.
    """
    return verify_step_costs(model, batch, tokens_per_sequence, context, dtype, kv_dtype,
                             attention).on(accelerator).time_s


def batched_speculative_speedup(model: ModelConfig | str, accelerator: Accelerator | str,
                                batch: int, alpha: float, gamma: int, cost_ratio: float,
                                context: int = 512, dtype: str = "fp16") -> float:
    """Speedup of speculation for a batch: E(alpha, gamma) / (gamma c + T_verify / T_decode).

    T_verify / T_decode is `verify_step_time` with gamma + 1 tokens per sequence over one:
    about 1 while the target's step is memory bound (small batches; for an MoE more, since
    gamma + 1 tokens per sequence touch more experts), rising to gamma + 1 once the batch
    makes it compute bound, where speculation costs more than it saves. c is the draft's
    step cost relative to the target's decode step at the same batch.
    """
    _check_alpha(alpha)
    _check_gamma(gamma)
    check_non_negative("cost_ratio", cost_ratio)
    ratio = (verify_step_time(model, accelerator, batch, gamma + 1, context, dtype)
             / verify_step_time(model, accelerator, batch, 1, context, dtype))
    return expected_tokens_per_step(alpha, gamma) / (gamma * cost_ratio + ratio)
