"""What fusion saves: bytes of a block's memory-bound chains, and attention's memory traffic.

Chains. Between the matrix products of a Llama-style block sit short chains of
element-wise operators: the residual add and the next RMSNorm, the SwiGLU gate, the
rotary embedding, and the scale, mask and softmax of attention scores. Run eagerly,
each operator is a kernel that reads its inputs from memory and writes its output
back; fused, the chain is one kernel that reads the chain's inputs once and writes
only what another operator still needs. `CHAINS` lists the kernels each chain
launches as `llmperf.measured.model` writes it (reads and writes in units of the chain's
tensor), and what the fused kernel must still move; `chain_costs` turns them into
bytes for a model, phase and size. The fused counts are `llmperf.analytic.cost`'s own rows
(`norm_cost`, `activation_cost`, the rope row, `softmax_cost`), which count each of
those operators as one kernel already. Left out: the fp32 upcasts the model makes
around its norm and softmax in half precision (no kernel in fp32), RoPE's cos and sin
tables and the boolean mask (one row or matrix shared by every head).

Attention. The standard algorithm makes Theta(N d + N^2) accesses to off-chip
memory (HBM on a GPU) per head, FlashAttention Theta(N^2 d^2 / M) for an on-chip
memory of M elements, d <= M <= N d (Dao et al., "FlashAttention", NeurIPS 2022,
Theorem 2, https://arxiv.org/abs/2205.14135). The tiled count keeps falling as M
grows, down to 4 N d (Q, K, V and O once each) when one block holds every query:
Algorithm 1 caps only the inner block at d rows, never the block that the outer loop
holds on chip, and so does the count here (queries outer, query block M / 4d). The
counts here are those of `llmperf.analytic.cost.attention_cost` and
`llmperf.analytic.cost.flash_attention_cost`, in elements.

Decode. One query per head leaves a fused attention kernel with batch x heads
independent pieces of work; split-K decoding (Flash-Decoding) also splits the keys
into chunks, so that every streaming multiprocessor has work, and merges the partial
softmaxes at the end (https://crfm.stanford.edu/2023/10/12/flashdecoding.html).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..table import Table
from ..units import bytes_per_element, check_positive, format_bytes, normalize_dtype
from .cost import Cost, attention_cost, elementwise_cost, flash_attention_cost, fused_attention_cost
from .layers import step_costs


@dataclass(frozen=True)
class Kernel:
    """One operator launched on its own: tensors of the chain's size read and written, and
    FLOPs per element of that size."""

    name: str
    reads: float
    writes: float
    flops: float


@dataclass(frozen=True)
class Chain:
    """A chain of element-wise operators: its eager kernels, what one fused kernel must still
    read and write, how often it runs per layer, and why it cannot shrink further."""

    name: str
    kernels: tuple[Kernel, ...]
    fused_reads: float
    fused_writes: float
    per_layer: int
    note: str

    @property
    def unfused_passes(self) -> float:
        """Tensor-sized reads plus writes of the eager chain."""
        return sum(k.reads + k.writes for k in self.kernels)

    @property
    def fused_passes(self) -> float:
        return self.fused_reads + self.fused_writes


CHAINS = {
    "residual_norm": Chain(
        "residual_norm",
        (Kernel("add", 2, 1, 1.0), Kernel("rms_norm", 1, 1, 3.0), Kernel("mul weight", 1, 1, 1.0)),
        fused_reads=2, fused_writes=2, per_layer=2,
        note="h = x + branch is written anyway: the next residual add reads it"),
    "swiglu_gate": Chain(
        "swiglu_gate",
        (Kernel("silu", 1, 1, 4.0), Kernel("mul", 2, 1, 1.0)),
        fused_reads=2, fused_writes=1, per_layer=1,
        note="gate and up come from a matmul, the product goes to one"),
    "rotary": Chain(
        "rotary",
        (Kernel("mul cos", 1, 1, 1.0), Kernel("neg", 0.5, 0.5, 0.5), Kernel("cat", 1, 1, 0.0),
         Kernel("mul sin", 1, 1, 1.0), Kernel("add", 2, 1, 1.0)),
        fused_reads=1, fused_writes=1, per_layer=1,
        note="q and k come from a matmul; k also goes to the KV cache"),
    "masked_softmax": Chain(
        "masked_softmax",
        (Kernel("masked_fill", 1, 1, 0.0), Kernel("mul scale", 1, 1, 1.0),
         Kernel("softmax", 1, 1, 3.0)),
        fused_reads=1, fused_writes=1, per_layer=1,
        note="the scores come from a matmul, the probabilities go to one"),
}
"""The memory-bound chains of `llmperf.measured.model`'s block, as eager code launches them."""


@dataclass(frozen=True)
class ChainCost:
    """One chain over a whole step: `instances` runs (layers x per layer), each over
    `elements` values; eager (`kernels` launches per run) against one fused kernel."""

    name: str
    elements: int
    instances: int
    kernels: int
    unfused: Cost
    fused: Cost

    @property
    def saved_bytes(self) -> float:
        return self.unfused.bytes - self.fused.bytes

    @property
    def kernels_saved(self) -> int:
        """Kernel launches fusion removes over the step."""
        return (self.kernels - 1) * self.instances


def _chain_elements(m: ModelConfig, name: str, phase: str, batch: int, seq_len: int) -> int:
    tokens = batch * (seq_len if phase == "prefill" else 1)
    if name == "residual_norm":
        return tokens * m.d_model
    if name == "swiglu_gate":
        return tokens * m.experts_per_token * m.d_ff
    if name == "rotary":
        return tokens * (m.q_dim + m.kv_dim)
    keys = seq_len if phase == "prefill" else m.cached_tokens(seq_len + 1)
    return tokens * m.n_heads * keys  # one score per query head and key


def chain_cost(name: str, elements: int, dtype: str = "fp16", extra_bytes: float = 0.0,
               instances: int = 1) -> ChainCost:
    """Bytes and FLOPs of `instances` runs of chain `name` over `elements` values each.

    Unfused: sum over its kernels of (reads + writes) x elements x bytes per element;
    fused: (fused reads + fused writes) x elements x bytes. `extra_bytes` (a norm's
    weight vector) is read by both.
    """
    if name not in CHAINS:
        raise ValueError(f"name must be one of {sorted(CHAINS)}, got {name!r}")
    check_positive("elements", elements, integer=True)
    check_positive("instances", instances, integer=True)
    chain, b = CHAINS[name], bytes_per_element(dtype)
    flops = sum(k.flops for k in chain.kernels) * elements
    unfused = Cost(flops, chain.unfused_passes * elements * b + extra_bytes)
    fused = elementwise_cost(elements, flops / elements, reads=0, writes=0, dtype=dtype,
                             extra_bytes=chain.fused_passes * elements * b + extra_bytes)
    return ChainCost(name, int(elements), int(instances), len(chain.kernels),
                     unfused * instances, fused * instances)


def chain_costs(model: ModelConfig | str, phase: str, batch: int = 1, seq_len: int = 2048,
                dtype: str = "fp16", attention: str = "standard") -> tuple[ChainCost, ...]:
    """Every chain of one forward step, unfused against fused, summed over the layers.

    Sizes as in `llmperf.step_costs` (prefill: batch prompts of seq_len tokens; decode:
    one token after seq_len cached). The softmax chain exists only when attention is the
    standard algorithm: a fused attention kernel (`attention="fused"`) contains it.
    """
    m = get_model(model)
    dtype = normalize_dtype(dtype)
    step_costs(m, phase, batch, seq_len, dtype, attention=attention)  # validates the arguments
    out = []
    for name, chain in CHAINS.items():
        if name == "masked_softmax" and attention == "fused":
            continue
        extra = m.d_model * bytes_per_element(dtype) if name == "residual_norm" else 0.0
        out.append(chain_cost(name, _chain_elements(m, name, phase, batch, seq_len), dtype,
                              extra, instances=chain.per_layer * m.n_layers))
    return tuple(out)


def chain_table(model: ModelConfig | str, phase: str, batch: int = 1, seq_len: int = 2048,
                dtype: str = "fp16", attention: str = "standard",
                accelerator: Accelerator | str | None = None) -> Table:
    """`chain_costs` as a table; with an accelerator, each side's time at its bandwidth."""
    rows, acc = [], None if accelerator is None else get_accelerator(accelerator)
    costs = chain_costs(model, phase, batch, seq_len, dtype, attention)
    for c in costs:
        row = [c.name, c.instances, c.kernels, c.unfused.bytes, c.fused.bytes,
               c.unfused.bytes / c.fused.bytes]
        if acc is not None:
            row += [c.unfused.bytes / acc.mem_bandwidth, c.fused.bytes / acc.mem_bandwidth]
        rows.append(row)
    columns = ["chain", "runs", "kernels", "bytes unfused", "bytes fused", "ratio"]
    formats = {"bytes unfused": format_bytes, "bytes fused": format_bytes, "ratio": ".2f"}
    if acc is not None:
        columns += ["time unfused", "time fused"]
        formats |= {"time unfused": _ms, "time fused": _ms}
    name = get_model(model).name
    title = (f"Memory-bound chains of one {phase} step, {name}, batch {batch}, {seq_len} tokens, "
             f"{dtype}")
    return Table(columns, rows, title=title, formats=formats)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


# ---- attention's traffic ---------------------------------------------------------------------
def standard_attention_accesses(seq_len: int, d_head: int, dtype: str = "fp16") -> float:
    """Elements one head reads and writes in off-chip memory with the standard algorithm:
    4 N^2 + 4 N d (Q, K read; S written, read; P written, read; V read; O written), which is
    Theta(N d + N^2) (FlashAttention, Theorem 2)."""
    return attention_cost(seq_len, d_head, dtype=dtype).bytes / bytes_per_element(dtype)


def flash_attention_accesses(seq_len: int, d_head: int, sram_bytes: float,
                             dtype: str = "fp16") -> float:
    """Elements one head reads and writes with tiled attention and `sram_bytes` on chip:
    2 N d + 2 N d ceil(N / B_r), queries in the outer loop, with query blocks of
    B_r = min(floor(M / 4d), N) rows for M = sram_bytes / bytes per element (blocks of Q,
    O, K and V fit on chip; the key block B_c = min(B_r, d)). About 8 N^2 d^2 / M, which
    is Theta(N^2 d^2 / M) (FlashAttention, Algorithm 1 and Theorem 2), and 4 N d once
    B_r = N. Raises ValueError if M cannot hold one row each of Q, O, K and V."""
    return (flash_attention_cost(seq_len, d_head, sram_bytes=sram_bytes, dtype=dtype).bytes
            / bytes_per_element(dtype))


def flash_attention_order(seq_len: int, d_head: int, sram_bytes: float,
                          dtype: str = "fp16") -> float:
    """The theorem's order N^2 d^2 / M with M in elements, without its constant."""
    check_positive("seq_len", seq_len, integer=True)
    check_positive("d_head", d_head, integer=True)
    check_positive("sram_bytes", sram_bytes)
    return seq_len**2 * d_head**2 / (sram_bytes / bytes_per_element(dtype))


# ---- decode: the fused kernel's parallelism, and split-K ----------------------------------------
@dataclass(frozen=True)
class DecodeAttention:
    """One decode step's attention on a GPU with `sms` streaming multiprocessors: the bytes
    it must read, the independent pieces of work, and the time at the share of the memory
    bandwidth that the busy SMs draw."""

    bytes: float
    pieces: int
    sms: int
    bandwidth: float

    @property
    def busy_fraction(self) -> float:
        return min(1.0, self.pieces / self.sms)

    @property
    def time_s(self) -> float:
        return self.bytes / (self.bandwidth * self.busy_fraction)


def decode_attention(model: ModelConfig | str, accelerator: Accelerator | str, kv_len: int,
                     sms: int, batch: int = 1, splits: int = 1,
                     dtype: str = "fp16") -> DecodeAttention:
    """Attention of one decode step over `kv_len` cached tokens, per layer.

    Bytes: those of a fused kernel (`fused_attention_cost`: Q read, K and V read once
    per key/value head, O written). A fused kernel without split-K has batch x heads
    pieces of work (one query head each); `splits` > 1 cuts each sequence's keys into
    that many chunks (Flash-Decoding), multiplying the pieces. Model: each busy SM draws
    an equal share of the bandwidth, and the bandwidth is reached only when every SM has
    a piece; the final merge of the partial softmaxes is left out (a few numbers per
    piece). A rough model of why split-K helps, not of any kernel's exact speed.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("sms", sms, integer=True)
    check_positive("splits", splits, integer=True)
    check_positive("kv_len", kv_len, integer=True)
    if splits > kv_len:
        raise ValueError(f"splits ({splits}) must be at most kv_len ({kv_len})")
    cost = fused_attention_cost(1, m.d_head, kv_len=kv_len, heads=m.n_heads,
                                kv_heads=m.n_kv_heads, batch=batch, dtype=dtype, causal=False)
    return DecodeAttention(cost.bytes, batch * m.n_heads * splits, int(sms), acc.mem_bandwidth)


def splits_to_fill(model: ModelConfig | str, sms: int, batch: int = 1) -> int:
    """The fewest key splits that give every SM a piece: ceil(sms / (batch x heads))."""
    check_positive("sms", sms, integer=True)
    check_positive("batch", batch, integer=True)
    return max(1, math.ceil(sms / (batch * get_model(model).n_heads)))
