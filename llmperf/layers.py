"""The per-operator cost table of one forward step of a model: `layer_costs`.

Prefill: `batch` prompts of `seq_len` tokens each, every token attending to the
whole prompt (the standard algorithm computes all N^2 scores). Decode: one new
token per sequence attending to `seq_len` cached tokens plus itself.

Attention is costed one of two ways. "standard" is the lecture's algorithm: rows
qk, softmax and sv, with S and P written to and read from memory and every score
computed. "fused" is one kernel (FlashAttention, PyTorch's SDPA): S and P stay on
chip and a causal prefill skips the masked half of the scores.

Assumptions, stated once:
- Each weight matrix is read from memory once per step, whatever the batch.
- K and V are read once per key/value head (grouped query heads share the read).
- The LM head runs for the last position of each sequence only: generation needs
  no other logits.
- MoE: each token runs experts_per_token experts (FLOPs of those only). The bytes
  are those of every distinct expert the step touches; with T tokens routed
  uniformly and independently, the expected count is E * (1 - (1 - k/E)**T).
- Biases are left out (under 0.1 % of any catalog model's work).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .cost import (Cost, activation_cost, attention_scores_cost, attention_values_cost,
                   elementwise_cost, fused_attention_cost, grouped_matmul_cost, matmul_cost,
                   norm_cost, softmax_cost)
from .hardware import Accelerator, get_accelerator
from .models import ModelConfig, get_model
from .roofline import bound, roofline_time
from .units import check_positive, format_flops, format_bytes, format_seconds, normalize_dtype

PHASES = ("prefill", "decode")
ATTENTION_KERNELS = ("standard", "fused")
ATTENTION, FFN, OTHER = "attention", "ffn", "other"


@dataclass(frozen=True)
class OpRow:
    """One operator of the step, summed over the `layers` times it runs."""

    name: str
    block: str
    cost: Cost
    layers: int
    time_s: float
    bound: str

    @property
    def flops(self) -> float:
        return self.cost.flops

    @property
    def bytes(self) -> float:
        return self.cost.bytes

    @property
    def intensity(self) -> float:
        return self.cost.intensity


@dataclass(frozen=True)
class StepCosts:
    """The table returned by `layer_costs`: rows plus the totals of the step."""

    model: str
    phase: str
    batch: int
    seq_len: int
    accelerator: str
    dtype: str
    rows: tuple[OpRow, ...]

    def __iter__(self) -> Iterator[OpRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> OpRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no operator {name!r}; rows are {[r.name for r in self.rows]}")

    @property
    def total(self) -> Cost:
        return sum((row.cost for row in self.rows), Cost(0.0, 0.0))

    @property
    def time_s(self) -> float:
        """Step time if operators run one after another, each at its own roofline."""
        return sum(row.time_s for row in self.rows)

    def block_total(self, block: str) -> Cost:
        """Summed cost of the rows of one block: 'attention', 'ffn' or 'other'."""
        if block not in (ATTENTION, FFN, OTHER):
            raise ValueError(f"block must be one of {(ATTENTION, FFN, OTHER)}, got {block!r}")
        return sum((r.cost for r in self.rows if r.block == block), Cost(0.0, 0.0))

    def block_time_s(self, block: str) -> float:
        self.block_total(block)  # validates the name
        return sum(r.time_s for r in self.rows if r.block == block)

    def to_text(self) -> str:
        """A fixed-width table, one line per operator and a total."""
        head = (f"{self.model}, {self.phase}, batch {self.batch}, seq_len {self.seq_len}, "
                f"{self.dtype} on {self.accelerator}")
        lines = [head, f"{'operator':<14}{'FLOP':>14}{'bytes':>12}{'FLOP/B':>9}{'bound':>9}{'time':>12}"]
        for r in self.rows:
            lines.append(f"{r.name:<14}{format_flops(r.flops):>14}{format_bytes(r.bytes):>12}"
                         f"{r.intensity:>9.1f}{r.bound:>9}{format_seconds(r.time_s):>12}")
        t = self.total
        lines.append(f"{'total':<14}{format_flops(t.flops):>14}{format_bytes(t.bytes):>12}"
                     f"{t.intensity:>9.1f}{'':>9}{format_seconds(self.time_s):>12}")
        return "\n".join(lines)

    __str__ = to_text


def experts_touched(tokens: int, n_experts: int, experts_per_token: int) -> float:
    """Expected distinct experts hit by `tokens` tokens routed uniformly at random."""
    check_positive("tokens", tokens, integer=True)
    if n_experts == 1:
        return 1.0
    return n_experts * (1.0 - (1.0 - experts_per_token / n_experts) ** tokens)


def _attention_rows(m: ModelConfig, q_len: int, kv_len: int, batch: int, dtype: str,
                    kv_dtype: str, kernel: str) -> list[tuple[str, str, Cost, int]]:
    L = m.n_layers
    attn = dict(heads=m.n_heads, kv_heads=m.n_kv_heads, batch=batch, dtype=dtype, kv_dtype=kv_dtype)
    if kernel == "fused":
        return [("attention", ATTENTION, fused_attention_cost(q_len, m.d_head, kv_len, causal=True, **attn), L)]
    return [
        ("qk", ATTENTION, attention_scores_cost(q_len, m.d_head, kv_len, **attn), L),
        ("softmax", ATTENTION, softmax_cost(q_len, kv_len, m.n_heads, batch, dtype), L),
        ("sv", ATTENTION, attention_values_cost(q_len, m.d_head, kv_len, **attn), L),
    ]


def _operator_costs(m: ModelConfig, phase: str, batch: int, seq_len: int, dtype: str,
                    kv_dtype: str, kernel: str) -> list[tuple[str, str, Cost, int]]:
    q_len = seq_len if phase == "prefill" else 1
    kv_len = seq_len if phase == "prefill" else seq_len + 1
    tokens = batch * q_len
    d, L = m.d_model, m.n_layers
    ops = [("embedding", OTHER, elementwise_cost(tokens * d, 0.0, reads=1, writes=1, dtype=dtype), 1)]
    if m.position == "learned":
        ops.append(("positions", OTHER, elementwise_cost(tokens * d, 1.0, reads=2, writes=1, dtype=dtype), 1))
    ops += [
        ("attn_norm", ATTENTION, norm_cost(tokens, d, dtype, m.norm), L),
        ("q_proj", ATTENTION, matmul_cost(tokens, d, m.q_dim, dtype), L),
        ("k_proj", ATTENTION, matmul_cost(tokens, d, m.kv_dim, dtype), L),
        ("v_proj", ATTENTION, matmul_cost(tokens, d, m.kv_dim, dtype), L),
    ]
    if m.position == "rope":
        rotated = tokens * (m.q_dim + m.kv_dim)
        ops.append(("rope", ATTENTION, elementwise_cost(rotated, 3.0, reads=1, writes=1, dtype=dtype), L))
    ops += _attention_rows(m, q_len, kv_len, batch, dtype, kv_dtype, kernel)
    ops += [
        ("o_proj", ATTENTION, matmul_cost(tokens, m.q_dim, d, dtype), L),
        ("attn_residual", ATTENTION, elementwise_cost(tokens * d, 1.0, reads=2, writes=1, dtype=dtype), L),
        ("ffn_norm", FFN, norm_cost(tokens, d, dtype, m.norm), L),
    ]
    ops += _ffn_costs(m, tokens, dtype)
    ops += [
        ("ffn_residual", FFN, elementwise_cost(tokens * d, 1.0, reads=2, writes=1, dtype=dtype), L),
        ("final_norm", OTHER, norm_cost(tokens, d, dtype, m.norm), 1),
        ("lm_head", OTHER, matmul_cost(batch, d, m.vocab_size, dtype), 1),
    ]
    return ops


def _ffn_costs(m: ModelConfig, tokens: int, dtype: str) -> list[tuple[str, str, Cost, int]]:
    d, L, k = m.d_model, m.n_layers, m.experts_per_token
    rows = tokens * k  # token-expert pairs
    touched = experts_touched(tokens, m.n_experts, k)

    def expert_matmul(k_in: int, m_out: int) -> Cost:
        return grouped_matmul_cost(rows, k_in, m_out, weights=touched, dtype=dtype)

    ops = []
    if m.is_moe:
        ops.append(("router", FFN, matmul_cost(tokens, d, m.n_experts, dtype), L))
    if m.ffn_kind == "swiglu":
        ops += [("ffn_gate", FFN, expert_matmul(d, m.d_ff), L),
                ("ffn_up", FFN, expert_matmul(d, m.d_ff), L)]
    else:
        ops.append(("ffn_up", FFN, expert_matmul(d, m.d_ff), L))
    gated = m.ffn_kind == "swiglu"
    ops += [("activation", FFN, activation_cost(rows, m.d_ff, m.activation, gated, dtype), L),
            ("ffn_down", FFN, expert_matmul(m.d_ff, d), L)]
    return ops


def layer_costs(model: ModelConfig | str, phase: str, batch: int = 1, seq_len: int = 2048,
                dtype: str = "fp16", kv_dtype: str | None = None,
                accelerator: Accelerator | str = "A10", attention: str = "standard") -> StepCosts:
    """Per-operator FLOPs, bytes, intensity, bound and roofline time of one forward step.

    phase "prefill": `batch` prompts of `seq_len` tokens. phase "decode": one new
    token for each of `batch` sequences holding `seq_len` cached tokens. Times are
    on `accelerator` (default the lecture's A10) at its dense `dtype` peak.
    `attention` is "standard" (the lecture's algorithm) or "fused" (one kernel).
    """
    m = get_model(model)
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    check_positive("batch", batch, integer=True)
    check_positive("seq_len", seq_len, integer=True)
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got {attention!r}")
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype or dtype)
    acc = get_accelerator(accelerator)
    acc.peak(dtype)  # fail early if the part has no peak in this dtype
    rows = tuple(
        OpRow(name, block, cost * layers, layers, roofline_time(cost, acc, dtype) * layers,
              bound(cost, acc, dtype))
        for name, block, cost, layers in _operator_costs(m, phase, batch, seq_len, dtype, kv_dtype,
                                                         attention)
    )
    return StepCosts(m.name, phase, batch, seq_len, acc.name, dtype, rows)
