"""The per-operator cost table of one forward step of a model: `step_costs`.

Counting and timing are two steps. `step_costs(model, phase, ...)` counts the
FLOPs and bytes of every operator (no hardware involved); its `.on(accelerator)`
places that table on the accelerator's roofline, giving each row a time and a bound.
The table itself (`StepCosts`, its rows, their kinds and byte splits) lives in
`llmperf.analytic.steptable`; this module counts the rows.

Prefill: `batch` prompts of `seq_len` tokens each, every token attending to the
prompt. Decode: one new token per sequence attending to `seq_len` cached tokens
plus itself.

Attention is costed one of two ways (`ATTENTION_ALGORITHMS`). "standard" is the
lecture's algorithm: rows qk, softmax and sv, with S and P written to and read from
memory and every score computed (masked ones included). "fused" is one kernel
(FlashAttention, PyTorch's SDPA): S and P stay on chip and a causal prefill skips the
masked half of the scores.

Assumptions, stated once:
- Each weight matrix is read from memory once per step, whatever the batch.
- K and V are read once per key/value head (grouped query heads share the read).
- The LM head runs for the last position of each sequence only: generation needs
  no other logits.
- A sliding window (Mistral 7B) caps what decode reads: the new token attends to at
  most `sliding_window` cached tokens, which a rolling-buffer cache holds. In the
  prefill the standard algorithm still computes all seq_len^2 scores and masks those
  outside the window (as an unfused implementation does); the fused kernel skips
  them, so only its FLOPs shrink (K and V are still read once each).
- MoE: each token runs experts_per_token experts (FLOPs of those only). The bytes
  are those of every distinct expert the step touches; with T tokens routed
  uniformly and independently, the expected count is E * (1 - (1 - k/E)**T).
- Biases are left out (under 0.1 % of any catalog model's work).
"""
from __future__ import annotations

from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_positive, normalize_dtype
from .cost import (
    Cost,
    activation_cost,
    attention_scores_cost,
    attention_values_cost,
    elementwise_cost,
    fused_attention_cost,
    grouped_matmul_cost,
    matmul_cost,
    norm_cost,
    softmax_cost,
)
from .steptable import (  # noqa: F401  (the table's names, importable from here as before)
    ATTENTION,
    BLOCKS,
    DATA,
    ELEMENTWISE,
    FFN,
    KINDS,
    MATMUL,
    OTHER,
    OpRow,
    PlacedOpRow,
    PlacedStepCosts,
    StepCosts,
)

PHASES = ("prefill", "decode")
ATTENTION_ALGORITHMS = ("standard", "fused")


def experts_touched(tokens: int, n_experts: int, experts_per_token: int) -> float:
    """Expected distinct experts hit by `tokens` tokens routed uniformly at random."""
    check_positive("tokens", tokens, integer=True)
    if n_experts == 1:
        return 1.0
    return n_experts * (1.0 - (1.0 - experts_per_token / n_experts) ** tokens)


def _row(name: str, block: str, cost: Cost, layers: int, kind: str, weights: float = 0.0,
         kv: float = 0.0) -> OpRow:
    """An OpRow from one layer's cost and weight and KV bytes, summed over `layers`."""
    return OpRow(name, block, cost * layers, layers, kind=kind, weight_bytes=weights * layers,
                 kv_bytes=kv * layers)


def _attention_keys(m: ModelConfig, phase: str, seq_len: int) -> int:
    """Keys each query row of the attention matrices spans in this step.

    Prefill: the whole prompt (queries outside a sliding window are masked, not
    skipped, by the standard algorithm). Decode: the cached tokens plus the new one,
    or the `sliding_window` most recent of them.
    """
    if phase == "prefill":
        return seq_len
    return m.cached_tokens(seq_len + 1)


def attention_op_rows(model: ModelConfig | str, queries: int, kv_len: int, batch: int,
                      dtype: str = "fp16", kv_dtype: str | None = None,
                      attention: str = "standard", window: int | None = None
                      ) -> tuple[OpRow, ...]:
    """The attention rows of a step, summed over the layers, in `step_costs`' names.

    `queries` new tokens per sequence attend causally to `kv_len` keys (the last
    `queries` of which are their own) in each of `batch` sequences. "standard": rows qk,
    softmax and sv, every score computed; "fused": one row "attention" that skips masked
    pairs, and those outside `window` if one is given. Each row's `kv_bytes` are the keys
    and values it reads, once per key/value head; its weight bytes are 0.
    """
    m = get_model(model)
    if attention not in ATTENTION_ALGORITHMS:
        raise ValueError(f"attention must be one of {ATTENTION_ALGORITHMS}, got {attention!r}")
    kv_dtype = kv_dtype or dtype
    L = m.n_layers
    sizes = dict(kv_len=kv_len, heads=m.n_heads, batch=batch, dtype=dtype)
    tensors = dict(sizes, kv_heads=m.n_kv_heads, kv_dtype=kv_dtype)
    one_read = batch * m.n_kv_heads * kv_len * m.d_head * bytes_per_element(kv_dtype)  # K or V
    if attention == "fused":
        fused = fused_attention_cost(queries, m.d_head, causal=True, window=window, **tensors)
        return (_row("attention", ATTENTION, fused, L, ATTENTION, kv=2 * one_read),)
    return (
        _row("qk", ATTENTION, attention_scores_cost(queries, m.d_head, **tensors), L, ATTENTION,
             kv=one_read),
        _row("softmax", ATTENTION, softmax_cost(queries, **sizes), L, ATTENTION),
        _row("sv", ATTENTION, attention_values_cost(queries, m.d_head, **tensors), L, ATTENTION,
             kv=one_read),
    )


def _elementwise(elements: int, flops: float, reads: int, dtype: str) -> Cost:
    return elementwise_cost(elements, flops, reads=reads, writes=1, dtype=dtype)


def _norm(name: str, block: str, m: ModelConfig, tokens: int, dtype: str, layers: int) -> OpRow:
    """A norm reads its scale vector (and LayerNorm's bias): weights, as `norm_cost` counts."""
    vectors = 1 if m.norm == "rmsnorm" else 2
    return _row(name, block, norm_cost(tokens, m.d_model, dtype, m.norm), layers, ELEMENTWISE,
                weights=vectors * m.d_model * bytes_per_element(dtype))


def _matmul(name: str, block: str, n: int, k: int, m_out: int, dtype: str,
            layers: int) -> OpRow:
    return _row(name, block, matmul_cost(n, k, m_out, dtype), layers, MATMUL,
                weights=k * m_out * bytes_per_element(dtype))


def _operator_rows(m: ModelConfig, phase: str, batch: int, seq_len: int, dtype: str,
                   kv_dtype: str, algorithm: str) -> list[OpRow]:
    tokens = batch * (seq_len if phase == "prefill" else 1)
    d, L, b = m.d_model, m.n_layers, bytes_per_element(dtype)
    # the embedding gathers one row of its table per token: weights read, the activations written
    rows = [_row("embedding", OTHER, _elementwise(tokens * d, 0.0, 1, dtype), 1, ELEMENTWISE,
                 weights=tokens * d * b)]
    if m.position == "learned":  # adds a row of the position table to each token's embedding
        rows.append(_row("positions", OTHER, _elementwise(tokens * d, 1.0, 2, dtype), 1,
                         ELEMENTWISE, weights=tokens * d * b))
    rows += [
        _norm("attn_norm", ATTENTION, m, tokens, dtype, L),
        _matmul("q_proj", ATTENTION, tokens, d, m.q_dim, dtype, L),
        _matmul("k_proj", ATTENTION, tokens, d, m.kv_dim, dtype, L),
        _matmul("v_proj", ATTENTION, tokens, d, m.kv_dim, dtype, L),
    ]
    if m.position == "rope":
        rotated = tokens * (m.q_dim + m.kv_dim)
        rows.append(_row("rope", ATTENTION, _elementwise(rotated, 3.0, 1, dtype), L, ELEMENTWISE))
    queries = seq_len if phase == "prefill" else 1
    # In decode the window already capped the keys; in prefill the fused kernel skips the pairs.
    window = m.sliding_window if phase == "prefill" else None
    rows += attention_op_rows(m, queries, _attention_keys(m, phase, seq_len), batch, dtype,
                              kv_dtype, algorithm, window)
    rows += [
        _matmul("o_proj", ATTENTION, tokens, m.q_dim, d, dtype, L),
        _row("attn_residual", ATTENTION, _elementwise(tokens * d, 1.0, 2, dtype), L, ELEMENTWISE),
        _norm("ffn_norm", FFN, m, tokens, dtype, L),
    ]
    rows += _ffn_rows(m, tokens, dtype)
    rows += [
        _row("ffn_residual", FFN, _elementwise(tokens * d, 1.0, 2, dtype), L, ELEMENTWISE),
        _norm("final_norm", OTHER, m, tokens, dtype, 1),
        _matmul("lm_head", OTHER, batch, d, m.vocab_size, dtype, 1),
    ]
    return rows


def _ffn_rows(m: ModelConfig, tokens: int, dtype: str) -> list[OpRow]:
    d, L, k = m.d_model, m.n_layers, m.experts_per_token
    pairs = tokens * k  # token-expert pairs
    touched = experts_touched(tokens, m.n_experts, k)
    b = bytes_per_element(dtype)

    def expert_matmul(name: str, k_in: int, m_out: int) -> OpRow:
        return _row(name, FFN, grouped_matmul_cost(pairs, k_in, m_out, weights=touched,
                                                   dtype=dtype),
                    L, MATMUL, weights=touched * k_in * m_out * b)

    rows = []
    if m.is_moe:
        rows.append(_matmul("router", FFN, tokens, d, m.n_experts, dtype, L))
    if m.ffn_kind == "swiglu":
        rows += [expert_matmul("ffn_gate", d, m.d_ff), expert_matmul("ffn_up", d, m.d_ff)]
    else:
        rows.append(expert_matmul("ffn_up", d, m.d_ff))
    gated = m.ffn_kind == "swiglu"
    rows += [_row("activation", FFN, activation_cost(pairs, m.d_ff, m.activation, gated, dtype),
                  L, ELEMENTWISE),
             expert_matmul("ffn_down", m.d_ff, d)]
    return rows


def step_costs(model: ModelConfig | str, phase: str, batch: int = 1, seq_len: int | None = None,
               dtype: str = "fp16", kv_dtype: str | None = None,
               attention: str = "standard") -> StepCosts:
    """Per-operator FLOPs, bytes and intensity of one forward step; no hardware needed.

    phase "prefill": `batch` prompts of `seq_len` tokens. phase "decode": one new
    token for each of `batch` sequences holding `seq_len` cached tokens. `seq_len` is
    required (TypeError without it): a step's cost depends on it. Weights and
    activations in `dtype`, the KV cache in `kv_dtype` (default `dtype`). `attention`
    is "standard" (the lecture's algorithm) or "fused" (one kernel). Each row carries
    its `kind` of FLOPs and its bytes split into weights, KV cache and activations
    (`llmperf.analytic.steptable`). Place the table on a roofline with `.on(accelerator)`
    for times and bounds.
    """
    m = get_model(model)
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if seq_len is None:
        raise TypeError("step_costs needs seq_len, a positive whole number of tokens: the "
                        "prompt's length (prefill) or the tokens already cached (decode)")
    check_positive("batch", batch, integer=True)
    check_positive("seq_len", seq_len, integer=True)
    if attention not in ATTENTION_ALGORITHMS:
        raise ValueError(f"attention must be one of {ATTENTION_ALGORITHMS}, got {attention!r}")
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype or dtype)
    rows = tuple(_operator_rows(m, phase, int(batch), int(seq_len), dtype, kv_dtype, attention))
    return StepCosts(m.name, phase, int(batch), int(seq_len), dtype, kv_dtype, attention, rows)
