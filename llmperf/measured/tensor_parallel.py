"""Tensor parallelism of the reference model, Megatron-style, over torch.distributed.

Each of `world_size` ranks holds a slice of every layer (Shoeybi et al., "Megatron-LM",
https://arxiv.org/abs/1909.08053, section 3):

- attention: the fused Wq|Wk|Wv by columns (output features), whole heads to each rank:
  n_heads / p query heads, and with them the key/value heads they read. When p divides
  n_kv_heads each rank holds n_kv_heads / p of them; when n_kv_heads divides p, the p /
  n_kv_heads ranks whose query heads share one KV head each hold a copy of that head, and
  nothing more (the least a rank can hold and still attend alone; vLLM replicates KV heads the
  same way). Other world sizes are refused. The output projection Wo by rows (input features).
- FFN: the fused gate|up matrix by columns, both halves with the same columns, so a rank's
  gate and up products meet in its own silu(gate) * up; the down projection W2 by rows.
- A row-split product leaves each rank a partial sum of the layer's output: one all-reduce
  after attention and one after the FFN, two per layer. Biases of the row-split matrices
  stay on rank 0, so they are added once.
- The embedding, the norms and the head are replicated: every rank computes the same logits
  and picks the same token.

A rank's model is the reference `Transformer` with a narrower config (n_heads / p heads,
d_ff / p) whose blocks hold `Attention` and `FeedForward` modules built from slices of the
full weights, each wrapped to all-reduce its output: the model's own forward pass, KV cache
(each rank caches its own heads) and `generate` run unchanged.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..analytic.parallel import ALLREDUCES_PER_LAYER
from ..models import ModelConfig
from ..units import check_positive
from .distributed import CommClock, check_world_size, launch, model_with_blocks, rank_device
from .generate import generate, prompt_tensor
from .model import MLP, Attention, Block, FeedForward, Transformer, check_model


@dataclass(frozen=True)
class HeadShard:
    """The query heads of one rank and the key/value heads it holds for them."""

    q_heads: range
    kv_heads: range


def check_tensor_parallel(config: ModelConfig, world_size: int) -> None:
    """ValueError unless `config` splits evenly over `world_size` ranks (module docstring)."""
    check_world_size(world_size)
    p, H, Hkv = int(world_size), config.n_heads, config.n_kv_heads
    if config.is_moe:
        raise ValueError(f"model must be dense for tensor parallelism here (config.n_experts="
                         f"{config.n_experts}); see llmperf.measured.expert_parallel")
    if H % p:
        raise ValueError(f"world_size must divide n_heads ({H}), got {p}")
    if Hkv % p and p % Hkv:
        raise ValueError(f"world_size must divide n_kv_heads ({Hkv}) or be a multiple of it, "
                         f"got {p}")
    if config.d_ff % p:
        raise ValueError(f"world_size must divide d_ff ({config.d_ff}), got {p}")


def head_shard(config: ModelConfig, rank: int, world_size: int) -> HeadShard:
    """Rank `rank`'s query heads (a contiguous n_heads / p) and the KV heads they read."""
    H, Hkv, p = config.n_heads, config.n_kv_heads, world_size
    q = range(rank * H // p, (rank + 1) * H // p)
    if Hkv % p == 0:
        kv = range(rank * Hkv // p, (rank + 1) * Hkv // p)
    else:  # p / Hkv ranks share each KV head: this rank's query heads all read one
        first = q.start // (H // Hkv)
        kv = range(first, first + 1)
    return HeadShard(q, kv)


def rank_config(config: ModelConfig, world_size: int) -> ModelConfig:
    """The config of one rank's model: its heads and its d_ff / p FFN columns."""
    shard = head_shard(config, 0, world_size)
    return config.with_(name=f"{config.name} (tensor-parallel 1/{world_size})",
                        n_heads=len(shard.q_heads), n_kv_heads=len(shard.kv_heads),
                        d_head=config.d_head, d_ff=config.d_ff // world_size)


def _parameter(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.contiguous(), requires_grad=False)


def _fill_columns(linear: nn.Linear, full: nn.Linear, rows: list[slice]) -> None:
    """Column-parallel: the output features `rows` of `full` (its weight's rows)."""
    linear.weight = _parameter(torch.cat([full.weight[r] for r in rows]))
    if full.bias is not None:
        linear.bias = _parameter(torch.cat([full.bias[r] for r in rows]))


def _fill_rows(linear: nn.Linear, full: nn.Linear, cols: slice, rank: int) -> None:
    """Row-parallel: the input features `cols` of `full`; its bias on rank 0 only."""
    linear.weight = _parameter(full.weight[:, cols])
    if full.bias is not None:
        linear.bias = _parameter(full.bias if rank == 0 else torch.zeros_like(full.bias))


def shard_attention(attention: Attention, config: ModelConfig, rank: int,
                    world_size: int) -> Attention:
    """Rank `rank`'s attention: an `Attention` of its heads, weights sliced from `attention`."""
    H, Hkv, D = config.n_heads, config.n_kv_heads, config.d_head
    s = head_shard(config, rank, world_size)
    q = slice(s.q_heads.start * D, s.q_heads.stop * D)
    k = slice((H + s.kv_heads.start) * D, (H + s.kv_heads.stop) * D)
    v = slice((H + Hkv + s.kv_heads.start) * D, (H + Hkv + s.kv_heads.stop) * D)
    with torch.device("meta"):
        part = Attention(rank_config(config, world_size), attention.layer_index)
    _fill_columns(part.wqkv, attention.wqkv, [q, k, v])
    _fill_rows(part.wo, attention.wo, q, rank)
    return part


def shard_feed_forward(ffn: nn.Module, config: ModelConfig, rank: int,
                       world_size: int) -> nn.Module:
    """Rank `rank`'s FFN: d_ff / p hidden units, of a SwiGLU (gate and up alike) or an MLP."""
    f = config.d_ff // world_size
    cols = slice(rank * f, (rank + 1) * f)
    if isinstance(ffn, FeedForward):
        with torch.device("meta"):
            part = FeedForward(config.d_model, f, config.bias)
        up = slice(config.d_ff + cols.start, config.d_ff + cols.stop)
        _fill_columns(part.w13, ffn.w13, [cols, up])
    elif isinstance(ffn, MLP):
        with torch.device("meta"):
            part = MLP(config.d_model, f, config.activation, config.bias)
        _fill_columns(part.w1, ffn.w1, [cols])
    else:
        raise ValueError(f"ffn must be a FeedForward or an MLP, got {type(ffn).__name__}")
    _fill_rows(part.w2, ffn.w2, cols, rank)
    return part


class AllReduced(nn.Module):
    """`inner` (a row-parallel layer: its output a partial sum), then the sum over all ranks."""

    def __init__(self, inner: nn.Module, clock: CommClock, world_size: int) -> None:
        super().__init__()
        self.inner, self.clock, self.world_size = inner, clock, world_size

    def forward(self, *args: object) -> torch.Tensor:
        y = self.inner(*args)
        if self.world_size > 1:
            self.clock.all_reduce(y)
        return y


def shard_model(model: Transformer, rank: int, world_size: int, clock: CommClock) -> Transformer:
    """Rank `rank`'s model: every block's attention and FFN sliced and all-reduced."""
    config = model.config
    check_tensor_parallel(config, world_size)
    local = rank_config(config, world_size)
    blocks = []
    for i, block in enumerate(model.layers):
        with torch.device("meta"):
            part = Block(local, i)
        part.attention_norm, part.ffn_norm = block.attention_norm, block.ffn_norm
        part.attention = AllReduced(shard_attention(block.attention, config, rank, world_size),
                                    clock, world_size)
        part.feed_forward = AllReduced(shard_feed_forward(block.feed_forward, config, rank,
                                                          world_size), clock, world_size)
        blocks.append(part)
    return model_with_blocks(model, local, blocks)


@dataclass(frozen=True)
class StepSplit:
    """Medians over decode steps of one rank: the step, the time inside all-reduces, the
    rest (compute, sampling, Python). Medians taken apart need not add up exactly."""

    step_s: float
    communication_s: float
    compute_s: float


@dataclass(frozen=True)
class TensorParallelRun:
    """Greedy tokens (B, new_tokens) of a tensor-parallel run, and where its time went.

    decode: rank 0's split (`per_rank` has every rank's); prefill_s and
    prefill_communication_s: rank 0's prefill. all_reduce_bytes: one decode all-reduce's
    tensor, batch x d_model elements."""

    tokens: torch.Tensor
    world_size: int
    threads: int
    prefill_s: float
    prefill_communication_s: float
    decode: StepSplit
    per_rank: tuple[StepSplit, ...]
    all_reduces_per_step: int
    all_reduce_bytes: int
    startup_s: float
    wall_s: float


def run_tensor_parallel(model: Transformer, world_size: int, prompt, new_tokens: int,
                        threads: int | None = None, backend: str = "gloo") -> TensorParallelRun:
    """Greedy decoding of `prompt` (as `generate` takes it) by `model` split over `world_size`
    processes; its tokens equal `generate(model, prompt, new_tokens).tokens` up to the
    rounding of sums taken in another order. new_tokens >= 2 (at least one decode step)."""
    check_model(model)
    check_tensor_parallel(model.config, world_size)
    check_positive("new_tokens", new_tokens, integer=True)
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time a decode step, got {new_tokens}")
    tokens = prompt_tensor(prompt, model.config.vocab_size)
    if tokens.shape[1] + new_tokens - 1 > model.max_seq_len:
        raise ValueError(f"prompt ({tokens.shape[1]} tokens) + new_tokens - 1 is beyond "
                         f"max_seq_len={model.max_seq_len}")
    run = launch(_tensor_parallel_rank, world_size, (tokens, new_tokens), model=model,
                 backend=backend, threads=threads)
    splits = [_split(stamps, comm) for _, stamps, comm in run.results]
    out, stamps, comm = run.results[0]
    calls = ALLREDUCES_PER_LAYER * model.config.n_layers if world_size > 1 else 0
    return TensorParallelRun(out, world_size, run.threads, stamps[0], comm[0], splits[0],
                             tuple(splits), calls,
                             tokens.shape[0] * model.config.d_model * model.dtype.itemsize,
                             run.startup_s, run.wall_s)


def _split(stamps: list[float], comm: list[float]) -> StepSplit:
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return StepSplit(statistics.median(steps), statistics.median(comm[1:]),
                     statistics.median(s - c for s, c in zip(steps, comm[1:])))


def _tensor_parallel_rank(rank: int, world_size: int, model: Transformer, tokens: torch.Tensor,
                          new_tokens: int) -> tuple[torch.Tensor, list[float], list[float]]:
    """Tokens, generate's timestamps, and seconds inside all-reduces per forward pass."""
    clock = CommClock(rank_device(rank, dist.get_backend()))
    shard = shard_model(model, rank, world_size, clock)
    generation = generate(shard, tokens.to(shard.device), new_tokens)
    calls = ALLREDUCES_PER_LAYER * len(shard.layers) if world_size > 1 else 0
    comm = [sum(clock.calls_s[i * calls:(i + 1) * calls]) for i in range(new_tokens)]
    return generation.tokens, generation.timestamps_s, comm
