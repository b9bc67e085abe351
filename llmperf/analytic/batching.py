"""Closed forms for batched decode: intensity against batch and context, and what fits.

`step_costs` counts every operator of a step; these formulas keep only the two terms
that decide whether batching pays, so that a reader can see them. For a dense model
with P parameters, L layers, h query heads and h_kv key/value heads of size d, weights
in b bytes and the KV cache in b_kv bytes, one decode step of B sequences that each
hold N tokens does and moves about

    FLOPs = B (2P + 4 L N h d)            (2P per token; QK^T and PV over N keys)
    bytes = b P + 2 b_kv L N h_kv d B      (every weight once; every sequence's K and V)

The weights are read once for the whole batch; K and V are read once per sequence.
Hence the step's intensity

    I(B, N) = B (2P + 4 L N h d) / (b P + 2 b_kv L N h_kv d B)

grows about linearly in B while the weights dominate the bytes, and tends to the
ceiling (2P + 4 L N h d) / (2 b_kv L N h_kv d) as B grows: more sequences add as
many KV bytes as they add FLOPs. Decode attention alone does 4 h d FLOPs per cached
token and layer against 2 b_kv h_kv d bytes, an intensity of 2h / (b_kv h_kv)
(h / h_kv in 16-bit), whatever B is.

What the forms leave out (so they sit a little above `step_costs`' totals): the
activations that each matrix product reads and writes (a share that grows like
B / D), the element-wise operators, the softmax and, under the standard algorithm,
the score and probability matrices' traffic; and they count the embedding table as
read, which a step does only one row of. tests/test_batching.py holds each form to
`step_costs` within a stated tolerance.
"""
from __future__ import annotations

import math

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_positive, normalize_dtype
from .memory import usable_bytes
from .perfmodel import requests_that_fit


def _dense(model: ModelConfig | str) -> ModelConfig:
    m = get_model(model)
    if m.is_moe:
        raise ValueError(f"{m.name} is a mixture of experts: the closed forms assume every "
                         "token uses every weight; use step_costs, which counts the experts "
                         "a batch touches")
    return m


def _sizes(model: ModelConfig | str, context: int, dtype: str,
           kv_dtype: str | None) -> tuple[ModelConfig, int, float, float]:
    m = _dense(model)
    check_positive("context", context, integer=True)
    b = bytes_per_element(normalize_dtype(dtype))
    b_kv = bytes_per_element(normalize_dtype(kv_dtype or dtype))
    return m, m.cached_tokens(context), b, b_kv


def decode_step_flops_bytes(model: ModelConfig | str, batch: int, context: int,
                            dtype: str = "fp16",
                            kv_dtype: str | None = None) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step of `batch` sequences holding `context` tokens each.

    FLOPs = B (2P + 4 L N h d), bytes = b P + 2 b_kv L N h_kv d B, with N the tokens the
    cache holds (`context`, or the sliding window). Dense models only.
    """
    check_positive("batch", batch, integer=True)
    m, n, b, b_kv = _sizes(model, context, dtype, kv_dtype)
    p, L, d = m.param_count(), m.n_layers, m.d_head
    flops = batch * (2.0 * p + 4.0 * L * n * m.n_heads * d)
    moved = b * p + 2.0 * b_kv * L * n * m.n_kv_heads * d * batch
    return flops, moved


def decode_step_intensity(model: ModelConfig | str, batch: int, context: int,
                          dtype: str = "fp16", kv_dtype: str | None = None) -> float:
    """I(B, N) = B (2P + 4LNhd) / (bP + 2 b_kv L N h_kv d B), FLOP per byte."""
    flops, moved = decode_step_flops_bytes(model, batch, context, dtype, kv_dtype)
    return flops / moved


def decode_intensity_limit(model: ModelConfig | str, context: int, dtype: str = "fp16",
                           kv_dtype: str | None = None) -> float:
    """The ceiling of I(B, N) as B grows: (2P + 4LNhd) / (2 b_kv L N h_kv d)."""
    m, n, _, b_kv = _sizes(model, context, dtype, kv_dtype)
    L, d = m.n_layers, m.d_head
    return (2.0 * m.param_count() + 4.0 * L * n * m.n_heads * d) / (2.0 * b_kv * L * n
                                                                      * m.n_kv_heads * d)


def decode_attention_intensity(model: ModelConfig | str, kv_dtype: str = "fp16") -> float:
    """Decode attention's FLOP per byte, 2h / (b_kv h_kv): h / h_kv for a 16-bit cache.

    Each cached token costs 4 h d FLOPs per layer (a score and a weighted value for each
    of h query heads) against 2 h_kv d elements of K and V read; batch size and context
    length cancel. Leaves out the softmax and any traffic of the scores themselves.
    """
    m = get_model(model)
    return 2.0 * m.n_heads / (bytes_per_element(normalize_dtype(kv_dtype)) * m.n_kv_heads)


def step_critical_batch(model: ModelConfig | str, accelerator: Accelerator | str, context: int,
                          dtype: str = "fp16", kv_dtype: str | None = None) -> int | None:
    """Smallest B with I(B, N) >= the accelerator's ridge; None if no batch reaches it.

    Solving B (2P + 4LNhd) = I* (bP + 2 b_kv L N h_kv d B) gives
    B = I* b P / (2P + 4LNhd - 2 I* b_kv L N h_kv d), which exists only while the
    denominator is positive, that is while the ceiling `decode_intensity_limit` is above
    the ridge I*. (This is the whole step's intensity; the FFN's matrix products alone
    turn compute bound near `ffn_critical_batch`.)
    """
    m, n, b, b_kv = _sizes(model, context, dtype, kv_dtype)
    ridge = get_accelerator(accelerator).ridge_point(normalize_dtype(dtype))
    L, d = m.n_layers, m.d_head
    denominator = (2.0 * m.param_count() + 4.0 * L * n * m.n_heads * d
                   - 2.0 * ridge * b_kv * L * n * m.n_kv_heads * d)
    if denominator <= 0:
        return None
    batch = max(1, math.ceil(ridge * b * m.param_count() / denominator))
    # the ceiling can land one short of the ridge in floating point: step to the first B past it
    while decode_step_intensity(m, batch, context, dtype, kv_dtype) < ridge:
        batch += 1
    return batch


def kv_capacity_tokens(model: ModelConfig | str, accelerator: Accelerator | str,
                       dtype: str = "fp16", kv_dtype: str | None = None,
                       reserved_bytes: float = 0.0, ecc: bool = True) -> int:
    """Tokens of KV cache that fit beside the weights: floor((C - W - reserved) / KV per token).

    C is the accelerator's `usable_capacity(ecc)`, as in `max_batch_size`: with ECC on
    (the default) a GDDR6 part keeps 15/16 of `mem_capacity`; `ecc=False` counts all of it.
    0 when the weights alone do not fit. The simulator's `kv_capacity_tokens`.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    return requests_that_fit(usable_bytes(acc, ecc), m.weight_bytes(dtype),
                             m.kv_bytes_per_token(kv_dtype or dtype), reserved_bytes)
