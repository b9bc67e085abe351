"""Costs of operators: FLOPs and bytes moved to and from off-chip memory.

A multiply-add is 2 FLOPs. An exp, a division or a square root counts as 1 FLOP:
such element-wise work is memory bound on every accelerator in the catalog, so
its exact count never changes a conclusion. Bytes are what an operator reads
from and writes to off-chip memory (HBM, GDDR, DRAM), assuming each operand
crosses that boundary exactly once unless a function says otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..units import bytes_per_element, check_non_negative, check_positive


@dataclass(frozen=True)
class Cost:
    """FLOPs done and bytes moved by some piece of work."""

    flops: float
    bytes: float

    def __post_init__(self) -> None:
        check_non_negative("flops", self.flops)
        check_non_negative("bytes", self.bytes)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP per byte (inf for pure compute, 0 for no work)."""
        if self.bytes == 0:
            return math.inf if self.flops > 0 else 0.0
        return self.flops / self.bytes

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def __radd__(self, other: object) -> Cost:
        if other == 0:  # lets sum() start from 0
            return self
        return NotImplemented

    def __mul__(self, factor: float) -> Cost:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        check_non_negative("factor", factor)
        return Cost(self.flops * factor, self.bytes * factor)

    __rmul__ = __mul__


def _positive_ints(**sizes: int) -> None:
    for name, value in sizes.items():
        check_positive(name, value, integer=True)


# ---- matrix multiplication ------------------------------------------------------------------
def grouped_matmul_cost(rows: int, k: int, m: int, weights: float = 1, dtype: str = "fp16",
                        weight_dtype: str | None = None) -> Cost:
    """`rows` vectors of length k, each multiplied by one of `weights` (k, m) matrices.

    FLOPs 2*rows*k*m; bytes: the inputs (rows*k) and outputs (rows*m) in `dtype`,
    plus each weight matrix read once (weights*k*m) in `weight_dtype`. With one
    weight this is an ordinary matmul; with several it is an MoE layer's experts.
    """
    _positive_ints(rows=rows, k=k, m=m)
    check_positive("weights", weights)  # may be fractional: an expected number of experts
    act = bytes_per_element(dtype)
    wgt = bytes_per_element(weight_dtype or dtype)
    return Cost(2.0 * rows * k * m, (rows * k + rows * m) * act + weights * k * m * wgt)


def matmul_cost(n: int, k: int, m: int, dtype: str = "fp16",
                weight_dtype: str | None = None) -> Cost:
    """X (n, k) @ W (k, m): 2nkm FLOPs; (nk + km + nm) elements moved.

    At n = k = m = 4096 in fp16 the intensity is 1365.3 FLOP/byte; at n = 1 (GEMV,
    one decode token) it is about 1.
    """
    _positive_ints(n=n, k=k, m=m)
    return grouped_matmul_cost(n, k, m, weights=1, dtype=dtype, weight_dtype=weight_dtype)


# ---- element-wise work --------------------------------------------------------------------------
def elementwise_cost(elements: int, flops_per_element: float = 1.0, reads: int = 1,
                     writes: int = 1, dtype: str = "fp16", extra_bytes: float = 0.0) -> Cost:
    """An element-wise operator over `elements` values: `reads` input tensors, `writes` outputs."""
    _positive_ints(elements=elements)
    check_non_negative("flops_per_element", flops_per_element)
    check_non_negative("reads", reads, integer=True)
    check_non_negative("writes", writes, integer=True)
    check_non_negative("extra_bytes", extra_bytes)
    return Cost(elements * flops_per_element,
                (reads + writes) * elements * bytes_per_element(dtype) + extra_bytes)


def norm_cost(tokens: int, d_model: int, dtype: str = "fp16", kind: str = "rmsnorm") -> Cost:
    """RMSNorm (4 FLOP per element: square, sum, scale, weight) or LayerNorm (7: also the
    mean, the subtraction and the bias). Reads x and the weights, writes y."""
    per_element = {"rmsnorm": 4.0, "layernorm": 7.0}
    if kind not in per_element:
        raise ValueError(f"kind must be one of {sorted(per_element)}, got {kind!r}")
    weight_vectors = 1 if kind == "rmsnorm" else 2
    return elementwise_cost(tokens * d_model, per_element[kind], reads=1, writes=1, dtype=dtype,
                            extra_bytes=weight_vectors * d_model * bytes_per_element(dtype))


ACTIVATION_FLOPS = {"relu": 1.0, "silu": 4.0, "gelu": 8.0}  # silu: neg, exp, add, divide


def activation_cost(tokens: int, d_ff: int, activation: str = "silu", gated: bool = True,
                    dtype: str = "fp16") -> Cost:
    """The FFN nonlinearity. Gated (SwiGLU): act(gate) * up, reading two inputs."""
    if activation not in ACTIVATION_FLOPS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_FLOPS)}, "
                         f"got {activation!r}")
    flops = ACTIVATION_FLOPS[activation] + (1.0 if gated else 0.0)
    return elementwise_cost(tokens * d_ff, flops, reads=2 if gated else 1, writes=1, dtype=dtype)


# ---- attention ------------------------------------------------------------------------------
# Every attention function names its sizes alike: `seq_len` queries, `kv_len` keys
# (default seq_len), heads of `d_head`, `heads` query heads sharing `kv_heads` key/value
# heads (default heads; fewer is grouped-query attention), `batch` sequences.
def _attention_sizes(seq_len: int, kv_len: int | None, d_head: int, heads: int,
                     kv_heads: int | None, batch: int) -> tuple[int, int]:
    kv_heads = heads if kv_heads is None else kv_heads
    kv_len = seq_len if kv_len is None else kv_len
    _positive_ints(seq_len=seq_len, kv_len=kv_len, d_head=d_head, heads=heads, kv_heads=kv_heads,
                   batch=batch)
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    return kv_len, kv_heads


def attention_scores_cost(seq_len: int, d_head: int, *, kv_len: int | None = None, heads: int = 1,
                          kv_heads: int | None = None, batch: int = 1, dtype: str = "fp16",
                          kv_dtype: str | None = None) -> Cost:
    """Step 1 of the lecture's algorithm, S = Q K^T: 2 d seq_len kv_len FLOPs per head.

    Reads Q and K, writes S. K is read once per key/value head: the query heads of a
    group share it (GQA).
    """
    kv_len, kv_heads = _attention_sizes(seq_len, kv_len, d_head, heads, kv_heads, batch)
    act, kv = bytes_per_element(dtype), bytes_per_element(kv_dtype or dtype)
    flops = 2.0 * d_head * seq_len * kv_len * heads * batch
    moved = batch * (heads * seq_len * d_head * act + kv_heads * kv_len * d_head * kv
                     + heads * seq_len * kv_len * act)
    return Cost(flops, moved)


def softmax_cost(seq_len: int, *, kv_len: int | None = None, heads: int = 1, batch: int = 1,
                 dtype: str = "fp16") -> Cost:
    """Step 2, P = softmax(S): 3 FLOPs per score (the lecture's count); reads S, writes P."""
    kv_len = seq_len if kv_len is None else kv_len
    _positive_ints(seq_len=seq_len, kv_len=kv_len, heads=heads, batch=batch)
    return elementwise_cost(batch * heads * seq_len * kv_len, 3.0, reads=1, writes=1, dtype=dtype)


def attention_values_cost(seq_len: int, d_head: int, *, kv_len: int | None = None, heads: int = 1,
                          kv_heads: int | None = None, batch: int = 1, dtype: str = "fp16",
                          kv_dtype: str | None = None) -> Cost:
    """Step 3, O = P V: 2 seq_len kv_len d FLOPs per head; reads P and V, writes O."""
    kv_len, kv_heads = _attention_sizes(seq_len, kv_len, d_head, heads, kv_heads, batch)
    act, kv = bytes_per_element(dtype), bytes_per_element(kv_dtype or dtype)
    flops = 2.0 * seq_len * kv_len * d_head * heads * batch
    moved = batch * (heads * seq_len * kv_len * act + kv_heads * kv_len * d_head * kv
                     + heads * seq_len * d_head * act)
    return Cost(flops, moved)


def attention_cost(seq_len: int, d_head: int, *, kv_len: int | None = None, heads: int = 1,
                   kv_heads: int | None = None, batch: int = 1, dtype: str = "fp16",
                   kv_dtype: str | None = None) -> Cost:
    """The lecture's standard attention (S and P written to and read back from memory).

    With seq_len = kv_len = N, one head, 2-byte elements:
      FLOPs = 2dN^2 + 3N^2 + 2N^2 d = (4d + 3) N^2
      bytes = 2*2dN + 2N^2 + 2N^2 + 2N^2 + 2(N^2 + Nd) + 2Nd = 8N^2 + 8Nd
    which is 62.4 FLOP/byte at d = 128, N = 4096. Every score is computed and a mask
    applied afterwards (no causal or sliding-window skipping), as the standard
    implementation does.
    """
    sizes = dict(kv_len=kv_len, heads=heads, batch=batch, dtype=dtype)
    tensors = dict(sizes, kv_heads=kv_heads, kv_dtype=kv_dtype)
    return (attention_scores_cost(seq_len, d_head, **tensors)
            + softmax_cost(seq_len, **sizes)
            + attention_values_cost(seq_len, d_head, **tensors))


def _causal_pairs_before(positions: int, window: int | None) -> int:
    """Pairs scored by the queries at positions 0 .. positions-1 of a causal sequence:
    query p sees min(p + 1, window) keys."""
    if window is None or positions <= window:
        return positions * (positions + 1) // 2
    return window * (window + 1) // 2 + (positions - window) * window


def attended_pairs(seq_len: int, kv_len: int, causal: bool, window: int | None = None) -> int:
    """(query, key) pairs scored for one head.

    Causal: the seq_len queries are the last positions of the kv_len keys, and the
    query at position p sees the keys at positions up to p; with a sliding `window`,
    only the last `window` of those (itself included). Not causal: every pair.
    """
    _positive_ints(seq_len=seq_len, kv_len=kv_len)
    if window is not None:
        if not causal:
            raise ValueError("window needs causal=True: a sliding window limits causal attention")
        _positive_ints(window=window)
    if not causal:
        return seq_len * kv_len
    if kv_len < seq_len:
        raise ValueError(f"kv_len ({kv_len}) must be >= seq_len ({seq_len}) for causal attention")
    return _causal_pairs_before(kv_len, window) - _causal_pairs_before(kv_len - seq_len, window)


def fused_attention_cost(seq_len: int, d_head: int, *, kv_len: int | None = None, heads: int = 1,
                         kv_heads: int | None = None, batch: int = 1, dtype: str = "fp16",
                         kv_dtype: str | None = None, causal: bool = True,
                         window: int | None = None) -> Cost:
    """Attention as one fused kernel (PyTorch's scaled_dot_product_attention, FlashAttention).

    The scores S and probabilities P stay on chip, so memory sees only Q, K, V and O:
    Q read and O written once, K and V read once per key/value head. A causal kernel
    skips the masked scores, and one with a sliding `window` (FlashAttention's
    window_size) also those outside the window, so FLOPs are (4d + 3) per attended
    pair (`attended_pairs`). This is the traffic of ideal tiling; `flash_attention_cost`
    models re-reads of K and V when the on-chip memory is small.
    """
    kv_len, kv_heads = _attention_sizes(seq_len, kv_len, d_head, heads, kv_heads, batch)
    act, kv = bytes_per_element(dtype), bytes_per_element(kv_dtype or dtype)
    flops = (4.0 * d_head + 3.0) * attended_pairs(seq_len, kv_len, causal, window) * heads * batch
    moved = batch * (2 * heads * seq_len * d_head * act + 2 * kv_heads * kv_len * d_head * kv)
    return Cost(flops, moved)


def flash_attention_cost(seq_len: int, d_head: int, *, sram_bytes: float, kv_len: int | None = None,
                         heads: int = 1, kv_heads: int | None = None, batch: int = 1,
                         dtype: str = "fp16") -> Cost:
    """Tiled attention with online softmax, queries in the outer loop, one pass.

    A block of Br queries and its output accumulator stay on chip while K and V stream
    past in blocks of Bc keys; S and P never reach memory. A block each of Q, O, K and V
    must fit in `sram_bytes` (M bytes, b bytes per element). FlashAttention's Algorithm 1
    runs the outer loop over K and V blocks of Bc = M / 4d rows, uncapped, and caps only
    the inner query block at d; counted in this loop order, the large block is the query
    block:
      Br = min(floor(M / (4 d b)), seq_len),   Bc = min(Br, d).
    Q is read and O written once; K and V are read once per query block of each query
    head (a kernel that kept a group's query heads together would read them less under
    GQA):
      bytes = (2 seq_len d + 2 kv_len d * ceil(seq_len / Br)) * b
    per head, about 8 N^2 d^2 / M for Br < N (M in elements), which is Theta(N^2 d^2 / M)
    as in FlashAttention's Theorem 2 for d <= M <= N d, falling to 4 N d (every tensor
    once) when a block holds all the queries. Every re-read of K and V is charged to
    off-chip memory (a cache would serve some), so this is an upper bound on traffic.
    FLOPs are the standard algorithm's (no causal skipping; the rescaling adds a
    lower-order term). Raises ValueError when `sram_bytes` cannot hold one row each of
    Q, O, K and V.
    Dao et al., "FlashAttention", https://arxiv.org/abs/2205.14135 (Algorithm 1,
    Theorem 2); Dao, "FlashAttention-2", https://arxiv.org/abs/2307.08691 (queries in the
    outer loop).
    """
    kv_len, _ = _attention_sizes(seq_len, kv_len, d_head, heads, kv_heads, batch)
    check_positive("sram_bytes", sram_bytes)
    elem = bytes_per_element(dtype)
    rows = math.floor(sram_bytes / (4 * d_head * elem))
    if rows < 1:
        raise ValueError(f"sram_bytes ({sram_bytes}) cannot hold one row each of Q, O, K and V "
                         f"at d_head={d_head}; need at least {4 * d_head * elem:g} bytes")
    query_blocks = math.ceil(seq_len / min(rows, seq_len))
    flops = attention_cost(seq_len, d_head, kv_len=kv_len, heads=heads, batch=batch,
                           dtype=dtype).flops
    moved = batch * heads * (2 * seq_len * d_head + 2 * kv_len * d_head * query_blocks) * elem
    return Cost(flops, moved)
