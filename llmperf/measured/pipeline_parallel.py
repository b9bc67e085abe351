"""Pipeline parallelism of the reference model: layers in stages, micro-batches flowing through.

The model's layers are cut into `stages` contiguous runs, one per process. Stage 0 also embeds
the tokens; the last stage also applies the final norm and the head and picks each next token
greedily. Activations go from stage to stage with point-to-point sends (`isend`, so a stage
never waits for its successor to take them; `recv` blocks), and each new token goes from the
last stage back to stage 0, which embeds it for the next pass.

The batch is cut into `micro_batches` equal micro-batches that follow each other through the
stages (GPipe: Huang et al., https://arxiv.org/abs/1811.06965): while stage 1 works on
micro-batch 0, stage 0 already works on micro-batch 1. A stage is idle while it waits for its
input; with p equal stages and m micro-batches, one pass (the prefill) leaves each stage idle
a fraction (p - 1) / (m + p - 1) of the time, the pipeline's bubble. Decoding makes
new_tokens - 1 more passes, a micro-batch's next pass starting once its token is back at
stage 0: `llmperf.pipeline_bubble_fraction(stages, micro_batches, passes)` gives the idle
fraction for any number of passes.

Each phase, prefill and decode, starts after a barrier, and its bubble is measured from the
intervals each stage spent computing: idle = 1 - busy / span, with span from the phase's
first start to its last finish on any stage (perf_counter is one clock for every process of a
machine). Stages are not equal here: the first embeds, the last runs the head, and a stage may
hold one layer more than another, so the measured bubble differs from the formula by that.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..analytic.parallel import pipeline_bubble_fraction
from ..units import check_positive
from .cache import KVCache
from .distributed import launch
from .generate import prompt_tensor, sample_next
from .model import Transformer, check_model


def stage_layers(n_layers: int, stages: int) -> list[range]:
    """Contiguous layer ranges, one per stage, their sizes differing by at most one (the
    earlier stages take the extra layers)."""
    check_positive("n_layers", n_layers, integer=True)
    check_positive("stages", stages, integer=True)
    if stages > n_layers:
        raise ValueError(f"stages must be <= n_layers ({n_layers}), got {stages}")
    base, extra = divmod(n_layers, stages)
    bounds = [0]
    for s in range(stages):
        bounds.append(bounds[-1] + base + (s < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True)
class PhaseBubble:
    """One phase of a pipeline run: its span, each stage's busy seconds and idle fraction, and
    `llmperf.pipeline_bubble_fraction`'s prediction for equal stages."""

    passes: int
    span_s: float
    busy_s: tuple[float, ...]
    idle: tuple[float, ...]
    predicted_idle: float

    @property
    def mean_idle(self) -> float:
        return sum(self.idle) / len(self.idle)


@dataclass(frozen=True)
class PipelineRun:
    """Greedy tokens (B, new_tokens) of a pipeline-parallel run and its bubbles; `decode` is
    None when new_tokens = 1 (the prefill's pass only)."""

    tokens: torch.Tensor
    stages: int
    micro_batches: int
    layers: tuple[range, ...]
    prefill: PhaseBubble
    decode: PhaseBubble | None
    threads: int
    startup_s: float
    wall_s: float


def run_pipeline_parallel(model: Transformer, stages: int, prompts, new_tokens: int,
                          micro_batches: int | None = None,
                          threads: int | None = None) -> PipelineRun:
    """Greedy decoding of `prompts` (B, T) by `model` cut into `stages` processes, the batch in
    `micro_batches` micro-batches of B / micro_batches rows (default B: one row each). Its
    tokens equal `generate(model, prompts, new_tokens).tokens` up to the rounding of a
    micro-batch's products against the whole batch's. gloo only (CPU tensors)."""
    check_model(model)
    layers = stage_layers(model.config.n_layers, stages)
    check_positive("new_tokens", new_tokens, integer=True)
    tokens = prompt_tensor(prompts, model.config.vocab_size)
    B, T = tokens.shape
    m = B if micro_batches is None else micro_batches
    check_positive("micro_batches", m, integer=True)
    if B % m:
        raise ValueError(f"micro_batches must divide the {B} prompts, got {m}")
    if T + new_tokens - 1 > model.max_seq_len:
        raise ValueError(f"prompt ({T} tokens) + new_tokens - 1 is beyond "
                         f"max_seq_len={model.max_seq_len}")
    run = launch(_pipeline_rank, stages, (list(tokens.chunk(m)), new_tokens, layers),
                 model=model, threads=threads)
    phases = [_phase([r[phase] for r in run.results], stages, m, passes)
              for phase, passes in ((0, 1), (1, new_tokens - 1)) if passes > 0]
    out = torch.cat(run.results[-1][2])
    return PipelineRun(out, stages, m, tuple(layers), phases[0],
                       phases[1] if len(phases) > 1 else None, run.threads, run.startup_s,
                       run.wall_s)


def _phase(intervals: list[list[tuple[float, float]]], stages: int, micro_batches: int,
           passes: int) -> PhaseBubble:
    start = min(a for stage in intervals for a, _ in stage)
    span = max(b for stage in intervals for _, b in stage) - start
    busy = tuple(sum(b - a for a, b in stage) for stage in intervals)
    return PhaseBubble(passes, span, busy, tuple(1 - x / span for x in busy),
                       pipeline_bubble_fraction(stages, micro_batches, passes))


def _head(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """The last stage's logits (B, vocab) of the last position: final norm, then the head."""
    x = model.norm(x[:, -1])
    return F.linear(x, model.tok_embeddings.weight) if model.output is None else model.output(x)


@torch.inference_mode()
def _pipeline_rank(rank: int, stages: int, model: Transformer, micro: list[torch.Tensor],
                   new_tokens: int, layers: list[range]):
    """One stage: for each pass, each micro-batch in order: take its input, run this stage's
    part on the micro-batch's own cache, pass the result on. Returns the (start, end) of each
    piece of work in the prefill and in the decode phase, and (last stage) the tokens."""
    last = rank == stages - 1
    T = micro[0].shape[1]
    _warm_up(model, rank, stages, micro[0], layers[rank], T + new_tokens - 1)
    caches = [KVCache(model, mb.shape[0], T + new_tokens - 1) for mb in micro]
    out: list[list[torch.Tensor]] = [[] for _ in micro]
    busy: list[list[tuple[float, float]]] = [[], []]
    sends = []
    for t in range(new_tokens):
        if t <= 1:
            dist.barrier()  # the prefill and the decode phase each start together
        pos = 0 if t == 0 else T + t - 1
        for j, mb in enumerate(micro):
            x = _stage_input(model, rank, stages, mb, t, out[j])
            start = time.perf_counter()
            x = _stage_work(model, rank, stages, x, pos, layers[rank], caches[j])
            busy[min(t, 1)].append((start, time.perf_counter()))
            if last:
                out[j].append(x)
            if not last:
                sends.append((dist.isend(x, dst=rank + 1), x))
            elif rank > 0 and t < new_tokens - 1:  # the new token back to stage 0
                sends.append((dist.isend(x, dst=0), x))
    for work, _ in sends:
        work.wait()
    tokens = [torch.stack(o, dim=1) for o in out] if last else None
    return busy[0], busy[1], tokens


def _stage_input(model: Transformer, rank: int, stages: int, prompt: torch.Tensor, t: int,
                 picked: list[torch.Tensor]) -> torch.Tensor:
    """What this stage works on in pass t. Stage 0: the prompt (B, T) in the first pass, then
    the token the last stage picked in the pass before (B, 1), received (or its own when it is
    the last stage too). Other stages: the previous stage's activations, received."""
    rows = prompt.shape[0]
    if rank > 0:
        length = prompt.shape[1] if t == 0 else 1
        return _recv((rows, length, model.config.d_model), model.dtype, rank - 1)
    if t == 0:
        return prompt
    if stages == 1:
        return picked[-1][:, None]
    return _recv((rows,), torch.int64, stages - 1)[:, None]


def _stage_work(model: Transformer, rank: int, stages: int, x: torch.Tensor, pos: int,
                layers: range, cache: KVCache) -> torch.Tensor:
    """This stage's part of a forward pass at positions pos.. : the embedding (stage 0), its
    layers, and on the last stage the greedy next token (B,)."""
    if rank == 0:
        x = model.tok_embeddings(x)
    cos, sin = model.rope(pos, x.shape[1])
    for i in layers:
        x = model.layers[i](x, cos, sin, pos, cache, None)
    if rank == stages - 1:
        x = sample_next(_head(model, x), 0.0, None, None)
    return x


def _warm_up(model: Transformer, rank: int, stages: int, prompt: torch.Tensor,
             layers: range, length: int) -> None:
    """One untimed prefill and decode of this stage's part on a scratch cache: a process's
    first pass runs slower (allocations, first calls into the kernels)."""
    x = prompt if rank == 0 else torch.zeros(*prompt.shape, model.config.d_model,
                                             dtype=model.dtype)
    cache = KVCache(model, prompt.shape[0], length)
    _stage_work(model, rank, stages, x, 0, layers, cache)
    _stage_work(model, rank, stages, x[:, -1:], prompt.shape[1], layers, cache)


def _recv(shape: tuple[int, ...], dtype: torch.dtype, src: int) -> torch.Tensor:
    x = torch.empty(shape, dtype=dtype)
    dist.recv(x, src=src)
    return x
