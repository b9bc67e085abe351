"""Expert parallelism of a mixture-of-experts model over torch.distributed.

Each of `world_size` ranks holds n_experts / p of every layer's experts (rank r the r-th
contiguous run) and a copy of everything else: embedding, attention, norms, routers, head. The
batch's sequences are split between the ranks, each running the model on its own (data
parallel outside the experts). In every MoE layer a rank routes its tokens as the
single-process layer does (`MoEFeedForward.route`), then:

1. dispatch: each (token, chosen expert) pair becomes one row, the rows sorted by expert (so
   by the rank that owns it); one all-to-all tells every rank how many rows it will get for
   each of its experts, a second sends the rows (`all_to_all_single` with split sizes);
2. each rank runs its experts on the rows it received;
3. combine: a third all-to-all returns every result to the rank its row came from, which
   mixes each token's top_k results with its router weights.

Each off-rank row crosses twice (there and back) as d_model numbers: per layer the ranks move
at most 2 x tokens x top_k x d_model elements, all of it when every row leaves its rank, a
fraction (p - 1) / p of it when routing is uniform and tokens are spread evenly (a row stays
home when its expert is on its own rank). Lepikhin et al., "GShard",
https://arxiv.org/abs/2006.16668; Fedus et al., "Switch Transformers",
https://arxiv.org/abs/2101.03961. No capacity limit drops a token here: every row is run, so
the output equals the single-process layer's.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..models import ModelConfig
from ..units import check_positive
from .distributed import CommClock, check_world_size, launch, model_with_blocks
from .generate import prompt_tensor
from .model import Block, MoEFeedForward, Transformer, check_model


def check_expert_parallel(config: ModelConfig, world_size: int) -> None:
    check_world_size(world_size)
    if not config.is_moe:
        raise ValueError(f"model must be a mixture of experts (config.n_experts > 1), "
                         f"{config.name} has n_experts={config.n_experts}")
    if config.n_experts % world_size:
        raise ValueError(f"world_size must divide n_experts ({config.n_experts}), "
                         f"got {world_size}")


def expert_ranges(n_experts: int, world_size: int) -> list[range]:
    """The experts each rank holds: contiguous runs of n_experts / world_size."""
    per = n_experts // world_size
    return [range(r * per, (r + 1) * per) for r in range(world_size)]


class ExpertParallelFeedForward(MoEFeedForward):
    """An MoE layer whose experts are spread over the ranks: this rank's router (a copy, so
    its routing is the single-process layer's) and its own experts; the rest by all-to-all.

    `traffic` gets, per call, the rows this rank sent to other ranks and the rows it ran."""

    def __init__(self, moe: MoEFeedForward, rank: int, world_size: int, clock: CommClock,
                 traffic: list[tuple[int, int]]) -> None:
        nn.Module.__init__(self)  # not MoEFeedForward's: it would build every expert
        self.top_k, self.dense, self.router = moe.top_k, False, moe.router
        owned = expert_ranges(len(moe.experts), world_size)[rank]
        self.experts = nn.ModuleList(moe.experts[e] for e in owned)
        self.rank, self.world_size, self.n_experts = rank, world_size, len(moe.experts)
        self.clock, self.traffic = clock, traffic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, k = x.shape, self.top_k
        x = x.reshape(-1, shape[-1])
        chosen, weights = self.route(x)                    # (N, k) each
        slots = chosen.flatten()                           # row i: token i // k, its expert
        order = slots.argsort(stable=True)                 # rows grouped by expert, so by rank
        rows = x[order // k]
        per_expert = torch.bincount(slots, minlength=self.n_experts)
        received, got_per_expert, sent, got = self._dispatch(rows, per_expert)
        results = self._run_experts(received, got_per_expert)
        back = torch.empty_like(rows)
        self.clock.all_to_all(back, results, sent, got)   # combine: each row home again
        mixed = torch.empty_like(back)
        mixed[order] = back                                # rows in (token, slot) order again
        y = (mixed.view(-1, k, shape[-1]) * weights.unsqueeze(-1)).sum(dim=1)
        self.traffic.append((sum(sent) - sent[self.rank], received.shape[0]))
        return y.view(shape)

    def _dispatch(self, rows: torch.Tensor, per_expert: torch.Tensor):
        """Send each rank the rows for its experts. Returns the rows received (grouped by
        sending rank, then expert), how many per (sender, own expert), and the row counts
        sent to and received from each rank."""
        p, local = self.world_size, len(self.experts)
        got_per_expert = torch.empty_like(per_expert)
        self.clock.all_to_all(got_per_expert, per_expert, [local] * p, [local] * p)
        sent = per_expert.view(p, local).sum(dim=1).tolist()
        got = got_per_expert.view(p, local).sum(dim=1).tolist()
        received = rows.new_empty(sum(got), rows.shape[1])
        self.clock.all_to_all(received, rows, got, sent)
        return received, got_per_expert, sent, got

    def _run_experts(self, received: torch.Tensor, got_per_expert: torch.Tensor) -> torch.Tensor:
        """Each own expert on its rows (rows of sender s, expert e lie together)."""
        local = len(self.experts)
        expert_of_row = torch.arange(local).repeat(self.world_size).repeat_interleave(
            got_per_expert)
        out = torch.empty_like(received)
        for e, expert in enumerate(self.experts):
            index = (expert_of_row == e).nonzero().squeeze(1)
            if index.numel() > 0:
                out[index] = expert(received[index])
        return out


@dataclass(frozen=True)
class ExpertParallelRun:
    """Logits (B, T, vocab) of an expert-parallel forward pass, its traffic and its time.

    bytes_exchanged: activation rows that crossed between ranks in one forward pass, there
    and back, all layers (the counts exchanged beside them, n_experts integers per rank and
    layer, left out). bytes_if_all_leave: 2 x tokens x top_k x d_model x element bytes x
    MoE layers, when no row stays on its rank; bytes_uniform: that times (p - 1) / p.
    rows_run: rows each rank's experts ran, all layers (the load balance).
    forward_s, communication_s: medians over the repeats, rank 0."""

    logits: torch.Tensor
    world_size: int
    threads: int
    experts: tuple[range, ...]
    bytes_exchanged: int
    bytes_if_all_leave: int
    bytes_uniform: float
    rows_run: tuple[int, ...]
    forward_s: float
    communication_s: float
    startup_s: float
    wall_s: float


def run_expert_parallel(model: Transformer, world_size: int, prompts,
                        repeats: int = 3, threads: int | None = None) -> ExpertParallelRun:
    """One forward pass of `prompts` (B, T) through an MoE `model` with its experts spread
    over `world_size` processes, each running B / world_size of the sequences; `repeats`
    timed passes. Its logits equal `model(prompts)` up to the rounding of products on fewer
    rows. gloo only (CPU tensors)."""
    check_model(model)
    check_expert_parallel(model.config, world_size)
    check_positive("repeats", repeats, integer=True)
    tokens = prompt_tensor(prompts, model.config.vocab_size)
    if tokens.shape[0] % world_size:
        raise ValueError(f"prompts must have a multiple of world_size ({world_size}) rows, "
                         f"got {tokens.shape[0]}")
    if tokens.shape[1] > model.max_seq_len:
        raise ValueError(f"prompts must be at most max_seq_len={model.max_seq_len} long")
    run = launch(_expert_parallel_rank, world_size, (tokens, repeats), model=model,
                 threads=threads)
    c = model.config
    element = model.dtype.itemsize
    all_leave = 2 * tokens.numel() * c.experts_per_token * c.d_model * element * c.n_layers
    logits, traffic, forward_s, comm_s = zip(*run.results)
    sent = sum(rows for rank in traffic for rows, _ in rank)
    return ExpertParallelRun(torch.cat(logits), world_size, run.threads,
                             tuple(expert_ranges(c.n_experts, world_size)),
                             2 * sent * c.d_model * element, all_leave,
                             all_leave * (world_size - 1) / world_size,
                             tuple(sum(ran for _, ran in rank) for rank in traffic),
                             forward_s[0], comm_s[0], run.startup_s, run.wall_s)


@torch.inference_mode()
def _expert_parallel_rank(rank: int, world_size: int, model: Transformer, tokens: torch.Tensor,
                          repeats: int):
    """This rank's logits, its traffic in the first pass, median pass and communication s."""
    clock, traffic = CommClock(), []
    blocks = []
    for i, block in enumerate(model.layers):
        with torch.device("meta"):
            part = Block(model.config, i)
        part.attention_norm, part.attention = block.attention_norm, block.attention
        part.ffn_norm = block.ffn_norm
        part.feed_forward = ExpertParallelFeedForward(block.feed_forward, rank, world_size,
                                                      clock, traffic)
        blocks.append(part)
    spread = model_with_blocks(model, model.config, blocks)
    mine = tokens.chunk(world_size)[rank]
    logits = spread(mine)  # also the warm-up
    first_pass = list(traffic)
    passes, comm = [], []
    for _ in range(repeats):
        dist.barrier()
        calls, start = len(clock.calls_s), time.perf_counter()
        spread(mine)
        passes.append(time.perf_counter() - start)
        comm.append(sum(clock.calls_s[calls:]))
    return logits, first_pass, statistics.median(passes), statistics.median(comm)
