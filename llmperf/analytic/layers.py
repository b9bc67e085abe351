"""The per-operator cost table of one forward step of a model: `step_costs`.

Counting and timing are two steps. `step_costs(model, phase, ...)` counts the
FLOPs and bytes of every operator (no hardware involved); its `.on(accelerator)`
places that table on the accelerator's roofline, giving each row a time and a bound.
`step_costs` is the same function under the name the book uses.

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

from collections.abc import Iterator
from dataclasses import dataclass

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..table import Table
from ..units import check_positive, format_bytes, format_flops, format_seconds, normalize_dtype
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
from .roofline import bound, roofline_time

PHASES = ("prefill", "decode")
ATTENTION_ALGORITHMS = ("standard", "fused")
ATTENTION, FFN, OTHER = "attention", "ffn", "other"
BLOCKS = (ATTENTION, FFN, OTHER)


@dataclass(frozen=True)
class OpRow:
    """One operator of the step, summed over the `layers` times it runs."""

    name: str
    block: str
    cost: Cost
    layers: int

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
class PlacedOpRow(OpRow):
    """An operator placed on a roofline: its time at the bound that limits it there."""

    time_s: float
    bound: str


_COUNT_COLUMNS = ("operator", "block", "layers", "FLOP", "bytes", "FLOP/B")
_COUNT_FORMATS = {"FLOP": format_flops, "bytes": format_bytes, "FLOP/B": ".1f"}


@dataclass(frozen=True, repr=False)
class StepCosts:
    """What `step_costs` returns: one row per operator, and the totals of the step.

    Index it by operator name (`step["ffn_up"]`), iterate over its rows, sum a block
    with `block_total`, and place it on a roofline with `on(accelerator)`.
    """

    model: str
    phase: str
    batch: int
    seq_len: int
    dtype: str
    kv_dtype: str
    attention: str
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

    def _block_rows(self, block: str) -> list[OpRow]:
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        return [row for row in self.rows if row.block == block]

    def block_total(self, block: str) -> Cost:
        """Summed cost of the rows of one block: 'attention', 'ffn' or 'other'."""
        return sum((row.cost for row in self._block_rows(block)), Cost(0.0, 0.0))

    def on(self, accelerator: Accelerator | str) -> PlacedStepCosts:
        """This table on `accelerator`'s roofline at its dense peak in the table's dtype.

        Each row gets max(FLOPs / peak, bytes / bandwidth) and the bound that sets it;
        ValueError if the part has no peak in this dtype.
        """
        acc = get_accelerator(accelerator)
        acc.peak(self.dtype)  # fail early if the part has no peak in this dtype
        rows = tuple(PlacedOpRow(r.name, r.block, r.cost, r.layers,
                                 roofline_time(r.cost, acc, self.dtype),
                                 bound(r.cost, acc, self.dtype))
                     for r in self.rows)
        return PlacedStepCosts(self.model, self.phase, self.batch, self.seq_len, self.dtype,
                               self.kv_dtype, self.attention, rows, acc)

    # ---- display ----------------------------------------------------------------------------
    def _title(self) -> str:
        kv = f", KV cache {self.kv_dtype}" if self.kv_dtype != self.dtype else ""
        return (f"{self.model}, {self.phase}, batch {self.batch}, seq_len {self.seq_len}, "
                f"{self.dtype}{kv}, {self.attention} attention")

    def table(self) -> Table:
        """The rows and their total as a `Table` (plain text and HTML)."""
        t = self.total
        return Table(_COUNT_COLUMNS,
                     [(r.name, r.block, r.layers, r.flops, r.bytes, r.intensity) for r in self],
                     title=self._title(), formats=_COUNT_FORMATS,
                     footer=[("total", None, None, t.flops, t.bytes, t.intensity)])

    def to_text(self) -> str:
        """A fixed-width table, one line per operator and a total."""
        return self.table().to_text()

    __str__ = to_text
    __repr__ = to_text

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


@dataclass(frozen=True, repr=False)
class PlacedStepCosts(StepCosts):
    """A `StepCosts` placed on one accelerator's roofline: rows carry time_s and bound.

    `time_s` is the step time if the operators run one after another, each at its
    own roofline: an optimistic estimate, not a bound (see `llmperf.analytic.roofline`).
    """

    accelerator: Accelerator
    rows: tuple[PlacedOpRow, ...]

    def __getitem__(self, name: str) -> PlacedOpRow:
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[PlacedOpRow]:
        return iter(self.rows)

    @property
    def time_s(self) -> float:
        """Seconds of the step: the sum of the rows' roofline times."""
        return sum(row.time_s for row in self.rows)

    def block_time_s(self, block: str) -> float:
        """Seconds of the rows of one block: 'attention', 'ffn' or 'other'."""
        return sum(row.time_s for row in self._block_rows(block))

    def _title(self) -> str:
        return f"{super()._title()}, on {self.accelerator.name}"

    def table(self) -> Table:
        t = self.total
        return Table((*_COUNT_COLUMNS, "bound", "time"),
                     [(r.name, r.block, r.layers, r.flops, r.bytes, r.intensity, r.bound, r.time_s)
                      for r in self],
                     title=self._title(), formats={**_COUNT_FORMATS, "time": format_seconds},
                     footer=[("total", None, None, t.flops, t.bytes, t.intensity, None,
                              self.time_s)])


def experts_touched(tokens: int, n_experts: int, experts_per_token: int) -> float:
    """Expected distinct experts hit by `tokens` tokens routed uniformly at random."""
    check_positive("tokens", tokens, integer=True)
    if n_experts == 1:
        return 1.0
    return n_experts * (1.0 - (1.0 - experts_per_token / n_experts) ** tokens)


Op = tuple[str, str, Cost, int]  # name, block, cost of one layer, layers it runs in


def _attention_keys(m: ModelConfig, phase: str, seq_len: int) -> int:
    """Keys each query row of the attention matrices spans in this step.

    Prefill: the whole prompt (queries outside a sliding window are masked, not
    skipped, by the standard algorithm). Decode: the cached tokens plus the new one,
    or the `sliding_window` most recent of them.
    """
    if phase == "prefill":
        return seq_len
    return m.cached_tokens(seq_len + 1)


def _attention_rows(m: ModelConfig, phase: str, seq_len: int, batch: int, dtype: str,
                    kv_dtype: str, algorithm: str) -> list[Op]:
    L = m.n_layers
    queries = seq_len if phase == "prefill" else 1
    sizes = dict(kv_len=_attention_keys(m, phase, seq_len), heads=m.n_heads, batch=batch,
                 dtype=dtype)
    tensors = dict(sizes, kv_heads=m.n_kv_heads, kv_dtype=kv_dtype)
    if algorithm == "fused":
        # In decode the window already capped kv_len; in prefill the kernel skips the pairs.
        window = m.sliding_window if phase == "prefill" else None
        fused = fused_attention_cost(queries, m.d_head, causal=True, window=window, **tensors)
        return [("attention", ATTENTION, fused, L)]
    return [
        ("qk", ATTENTION, attention_scores_cost(queries, m.d_head, **tensors), L),
        ("softmax", ATTENTION, softmax_cost(queries, **sizes), L),
        ("sv", ATTENTION, attention_values_cost(queries, m.d_head, **tensors), L),
    ]


def _elementwise(elements: int, flops: float, reads: int, dtype: str) -> Cost:
    return elementwise_cost(elements, flops, reads=reads, writes=1, dtype=dtype)


def _operator_costs(m: ModelConfig, phase: str, batch: int, seq_len: int, dtype: str,
                    kv_dtype: str, algorithm: str) -> list[Op]:
    tokens = batch * (seq_len if phase == "prefill" else 1)
    d, L = m.d_model, m.n_layers
    ops = [("embedding", OTHER, _elementwise(tokens * d, 0.0, 1, dtype), 1)]
    if m.position == "learned":
        ops.append(("positions", OTHER, _elementwise(tokens * d, 1.0, 2, dtype), 1))
    ops += [
        ("attn_norm", ATTENTION, norm_cost(tokens, d, dtype, m.norm), L),
        ("q_proj", ATTENTION, matmul_cost(tokens, d, m.q_dim, dtype), L),
        ("k_proj", ATTENTION, matmul_cost(tokens, d, m.kv_dim, dtype), L),
        ("v_proj", ATTENTION, matmul_cost(tokens, d, m.kv_dim, dtype), L),
    ]
    if m.position == "rope":
        rotated = tokens * (m.q_dim + m.kv_dim)
        ops.append(("rope", ATTENTION, _elementwise(rotated, 3.0, 1, dtype), L))
    ops += _attention_rows(m, phase, seq_len, batch, dtype, kv_dtype, algorithm)
    ops += [
        ("o_proj", ATTENTION, matmul_cost(tokens, m.q_dim, d, dtype), L),
        ("attn_residual", ATTENTION, _elementwise(tokens * d, 1.0, 2, dtype), L),
        ("ffn_norm", FFN, norm_cost(tokens, d, dtype, m.norm), L),
    ]
    ops += _ffn_costs(m, tokens, dtype)
    ops += [
        ("ffn_residual", FFN, _elementwise(tokens * d, 1.0, 2, dtype), L),
        ("final_norm", OTHER, norm_cost(tokens, d, dtype, m.norm), 1),
        ("lm_head", OTHER, matmul_cost(batch, d, m.vocab_size, dtype), 1),
    ]
    return ops


def _ffn_costs(m: ModelConfig, tokens: int, dtype: str) -> list[Op]:
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


def step_costs(model: ModelConfig | str, phase: str, batch: int = 1, seq_len: int = 2048,
               dtype: str = "fp16", kv_dtype: str | None = None,
               attention: str = "standard") -> StepCosts:
    """Per-operator FLOPs, bytes and intensity of one forward step; no hardware needed.

    phase "prefill": `batch` prompts of `seq_len` tokens. phase "decode": one new
    token for each of `batch` sequences holding `seq_len` cached tokens. Weights and
    activations in `dtype`, the KV cache in `kv_dtype` (default `dtype`). `attention`
    is "standard" (the lecture's algorithm) or "fused" (one kernel). Place the table
    on a roofline with `.on(accelerator)` for times and bounds.
    """
    m = get_model(model)
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    check_positive("batch", batch, integer=True)
    check_positive("seq_len", seq_len, integer=True)
    if attention not in ATTENTION_ALGORITHMS:
        raise ValueError(f"attention must be one of {ATTENTION_ALGORITHMS}, got {attention!r}")
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype or dtype)
    rows = tuple(OpRow(name, block, cost * layers, layers) for name, block, cost, layers
                 in _operator_costs(m, phase, batch, seq_len, dtype, kv_dtype, attention))
    return StepCosts(m.name, phase, int(batch), int(seq_len), dtype, kv_dtype, attention, rows)

