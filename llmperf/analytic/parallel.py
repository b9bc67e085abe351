"""Parallel layouts of one model over several GPUs: what each GPU holds, sends and waits for.

Megatron-style tensor parallelism splits each layer over `tp` GPUs: Q, K, V and the FFN's
first matrices by columns, the attention output projection and the FFN's down projection
by rows. Each row-split matrix ends with a partial sum that must be all-reduced, so every
layer does two all-reduces of the layer's activation (d_model values per token).
Shoeybi et al., "Megatron-LM", https://arxiv.org/abs/1909.08053, section 3.

A ring all-reduce of M bytes over p GPUs makes each GPU send (and receive)
2 (p - 1) / p * M bytes: a reduce-scatter and an all-gather of (p - 1) / p * M each
(`llmperf.analytic.collectives`, which also times it on a `Link`).

`tensor_parallel_decode` puts the pieces together for one decode step: what fits on each
GPU, the step's roofline time on one GPU's share of the work, and the all-reduces on the
link. `pipeline_bubble_fraction` is the idle share of a pipeline-parallel schedule, and
`kv_transfer_time` what moving a prompt's KV cache from a prefill GPU to a decode GPU
costs (disaggregated serving, `llmperf.serving.disaggregated`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware import Accelerator, Link, get_accelerator
from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_positive, normalize_dtype
from .collectives import _as_link, bytes_sent_per_rank, collective_time
from .cost import Cost
from .layers import step_costs
from .memory import usable_bytes
from .perfmodel import requests_that_fit
from .roofline import roofline_time

ALLREDUCES_PER_LAYER = 2  # after the attention output projection and after the FFN down projection
# Rows every tensor-parallel GPU computes whole: the norms and residual adds work on the
# full d_model vector, and each GPU gathers its tokens' embeddings (a few rows).
REPLICATED_ROWS = ("embedding", "positions", "attn_norm", "attn_residual", "ffn_norm",
                   "ffn_residual", "final_norm")


def ring_allreduce_bytes(message_bytes: float, world_size: int) -> float:
    """Bytes each of `world_size` GPUs sends in a ring all-reduce of `message_bytes`."""
    return bytes_sent_per_rank("all_reduce", message_bytes, world_size)


def tensor_parallel_layer_bytes(d_model: int, tp: int, dtype: str = "fp16") -> float:
    """Bytes each GPU sends per token for one layer: 2 ring all-reduces of d_model values."""
    check_positive("d_model", d_model, integer=True)
    check_positive("tp", tp, integer=True)
    return ALLREDUCES_PER_LAYER * ring_allreduce_bytes(d_model * bytes_per_element(dtype), tp)


def tensor_parallel_bytes_per_token(model: ModelConfig | str, tp: int, dtype: str = "fp16",
                                    layers: int | None = None) -> float:
    """Bytes each GPU sends per token over `layers` layers (default all) at tensor-parallel `tp`.

    2 all-reduces per layer of a d_model-long activation in `dtype`; 0 when tp = 1.
    """
    m = get_model(model)
    layers = m.n_layers if layers is None else layers
    check_positive("layers", layers, integer=True)
    return layers * tensor_parallel_layer_bytes(m.d_model, tp, dtype)


def pipeline_bubble_fraction(stages: int, microbatches: int, passes: int = 1) -> float:
    """Share of a GPipe-style schedule each of p equal stages idles: (p - 1) / (m + p - 1).

    p stages each take one slot per micro-batch; the m micro-batches leave the last stage
    after m + p - 1 slots, of which every stage is busy for m (Huang et al., "GPipe",
    https://arxiv.org/abs/1811.06965, section 2.3). 0 for one stage.

    passes > 1: each micro-batch makes that many trips through the stages (decoding, one
    token a trip), a trip starting once the same micro-batch's previous trip has left the
    last stage. Stage s runs trip t of micro-batch j at t max(m, p) + j + s, so the schedule
    lasts passes max(m, p) + min(m, p) - 1 slots, each stage busy for passes m of them:
    1 - passes m / (passes max(m, p) + min(m, p) - 1), which is GPipe's for one pass.
    """
    check_positive("stages", stages, integer=True)
    check_positive("microbatches", microbatches, integer=True)
    check_positive("passes", passes, integer=True)
    p, m, t = stages, microbatches, passes
    return 1 - t * m / (t * max(m, p) + min(m, p) - 1)


def kv_transfer_time(model: ModelConfig | str, prompt_tokens: int, link: Link | str,
                     dtype: str = "fp16") -> float:
    """Seconds to send the KV cache of a prompt of `prompt_tokens` tokens over `link` as one
    message: `collective_time("send", kv_cache_bytes(prompt_tokens, 1, dtype), 2, link)`,
    alpha + bytes / B (a sliding window caps the bytes, as it caps the cache)."""
    m = get_model(model)
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    return collective_time("send", m.kv_cache_bytes(int(prompt_tokens), 1, dtype), 2, link)


def kv_head_share(model: ModelConfig | str, tp: int) -> float:
    """Share of the KV cache (and of the K and V heads) each of `tp` GPUs holds.

    1 / tp when tp divides the KV heads; when there are fewer KV heads than GPUs each
    head is replicated on tp / n_kv_heads GPUs, so each holds 1 / n_kv_heads. ValueError
    when tp does not divide the query heads, or neither divides the other.
    """
    m = get_model(model)
    check_positive("tp", tp, integer=True)
    tp = int(tp)
    if m.n_heads % tp:
        raise ValueError(f"tp ({tp}) must divide {m.name}'s {m.n_heads} query heads")
    if m.n_kv_heads % tp and tp % m.n_kv_heads:
        raise ValueError(f"tp ({tp}) must divide, or be a multiple of, {m.name}'s "
                         f"{m.n_kv_heads} key/value heads")
    return math.ceil(m.n_kv_heads / tp) / m.n_kv_heads


@dataclass(frozen=True)
class TensorParallelDecode:
    """One decode step of `batch` sequences over `tp` GPUs; bytes and seconds per GPU.

    step_s = compute_s + communication_s (no overlap assumed): the time per output token
    of each sequence. `fits` when the batch is at most `max_batch`, the sequences whose
    KV cache fits beside the weights on each GPU.
    """

    model: str
    accelerator: str
    link: str
    tp: int
    batch: int
    seq_len: int
    dtype: str
    weight_bytes_per_gpu: float
    kv_bytes_per_gpu: float
    usable_bytes_per_gpu: float
    max_batch: int
    compute_s: float
    communication_s: float
    bytes_sent_per_gpu: float

    @property
    def fits(self) -> bool:
        return self.batch <= self.max_batch

    @property
    def step_s(self) -> float:
        """Seconds per decode step: the per-token latency of every sequence in the batch."""
        return self.compute_s + self.communication_s

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of the whole group: batch / step_s."""
        return self.batch / self.step_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.tp

    @property
    def communication_share(self) -> float:
        """Fraction of the step spent in the all-reduces."""
        return self.communication_s / self.step_s


def _per_gpu_cost(row, tp: int, kv_share: float) -> Cost:
    """One operator's FLOPs and bytes on one of `tp` GPUs (see `tensor_parallel_decode`)."""
    if row.name in REPLICATED_ROWS:
        return row.cost
    split = 1 / tp
    return Cost(row.flops * split,
                (row.weight_bytes + row.activation_bytes) * split + row.kv_bytes * kv_share)


def tensor_parallel_decode(model: ModelConfig | str, accelerator: Accelerator | str,
                           link: Link | str, tp: int, batch: int, seq_len: int,
                           dtype: str = "fp16", kv_dtype: str | None = None,
                           attention: str = "fused", ecc: bool = True,
                           activation_dtype: str = "fp16") -> TensorParallelDecode:
    """A decode step of `batch` sequences holding `seq_len` cached tokens each, Megatron-style
    over `tp` accelerators joined by `link`.

    Memory per GPU: weights / tp (the embedding and LM head split by vocabulary, the norms'
    few weights counted as split too) and the KV cache times `kv_head_share`, against
    `usable_capacity(ecc)`; `max_batch` is `requests_that_fit` of them.
    Compute per GPU: every operator of `step_costs(model, "decode", batch, seq_len)` at
    1 / tp of its FLOPs and bytes (its KV reads at `kv_head_share`), except the norms,
    residual adds and embedding gather (`REPLICATED_ROWS`), which every GPU does whole;
    each operator on the accelerator's roofline, summed.
    Communication: 2 all-reduces per layer of batch * d_model values in `activation_dtype`
    (16-bit by default: weight-only int8 or int4 still exchanges 16-bit activations),
    `collective_time("all_reduce", ...)` on `link`; none when tp = 1.
    """
    m, acc, link = get_model(model), get_accelerator(accelerator), _as_link(link)
    kv_share = kv_head_share(m, tp)
    tp = int(tp)
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype or dtype)
    step = step_costs(m, "decode", batch, seq_len, dtype, kv_dtype, attention)
    compute_s = sum(roofline_time(_per_gpu_cost(r, tp, kv_share), acc, dtype) for r in step.rows)
    activation_dtype = normalize_dtype(activation_dtype)
    message = int(batch) * m.d_model * bytes_per_element(activation_dtype)
    allreduces = ALLREDUCES_PER_LAYER * m.n_layers
    weight_bytes = m.weight_bytes(dtype) / tp
    kv_per_sequence = m.kv_cache_bytes(int(seq_len), 1, kv_dtype) * kv_share
    usable = usable_bytes(acc, ecc)
    return TensorParallelDecode(
        model=m.name, accelerator=acc.name, link=link.name, tp=tp, batch=int(batch),
        seq_len=int(seq_len), dtype=dtype, weight_bytes_per_gpu=weight_bytes,
        kv_bytes_per_gpu=kv_per_sequence * int(batch), usable_bytes_per_gpu=usable,
        max_batch=requests_that_fit(usable, weight_bytes, kv_per_sequence),
        compute_s=compute_s,
        communication_s=allreduces * collective_time("all_reduce", message, tp, link),
        bytes_sent_per_gpu=int(batch) * tensor_parallel_bytes_per_token(m, tp, activation_dtype))
