"""Speculative decoding, derived: tokens per target step, speedup, and the verification step's cost.

A cheap *draft* proposes gamma tokens; the *target* scores all of them in one forward pass over
gamma + 1 positions, and `llmperf.measured.speculative.verify` keeps a prefix of the drafts and
adds one token of its own, so that what comes out is distributed exactly as the target's own
samples (Leviathan, Kalman
and Matias, ICML 2023, https://arxiv.org/abs/2211.17192, Algorithm 1; Chen et al. 2023,
https://arxiv.org/abs/2302.01318, Algorithm 2).

The analytic half assumes, as Leviathan et al. do, that each drafted token is accepted with the
same probability alpha, independently of the others:

- tokens per target step: E = 1 + alpha + ... + alpha^gamma = (1 - alpha^(gamma+1)) / (1 - alpha);
- wall-time speedup, with one draft step costing c target steps: E / (gamma c + 1).
"""
from __future__ import annotations

import dataclasses
import math

from ..hardware import Accelerator
from ..models import ModelConfig, get_model
from ..units import check_non_negative, check_positive
from .layers import StepCosts, attention_op_rows, step_costs


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
    keys, each sequence's K and V read once (`llmperf.analytic.cost`, masked scores counted by the
    standard algorithm, skipped by the fused one). With T = 1 every row equals `step_costs`'s
    decode step (tested).
    """
    check_positive("batch", batch, integer=True)
    check_positive("tokens_per_sequence", tokens_per_sequence, integer=True)
    check_positive("context", context, integer=True)
    m, T = get_model(model), int(tokens_per_sequence)
    step = step_costs(m, "decode", batch * T, context, dtype, kv_dtype, attention)
    attn = attention_op_rows(m, T, m.cached_tokens(int(context) + T), int(batch), step.dtype,
                             step.kv_dtype, attention)
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
