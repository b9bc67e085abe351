"""Collectives timed on this machine with torch.distributed, to set beside the alpha-beta model
of `llmperf.analytic.collectives`.

`measure_collectives` launches one group of `world_size` processes (gloo on CPUs) and times
each operation at each message size: `warmup` untimed calls, then `repeats` calls, each
after a barrier, so every rank starts together. A call's duration is the slowest rank's
(the operation is done when every rank has its result), and a row keeps the median over the
repeats. The barrier releases the ranks a few microseconds apart, which the smallest
messages feel.

`message_bytes` is the whole tensor, as in the analytic model: what each rank holds before an
all-reduce, the gathered output of an all-gather, the input of a reduce-scatter, each rank's
whole input to an all-to-all (m / p to each peer, itself included). A send moves m bytes
from rank 0 to rank 1 (the other ranks wait at the next barrier). The ops that split a tensor
into p pieces need a whole number of elements per piece: a size that is not is rounded up to
the next one that is, and the row gives the size timed (so a row may appear once where two
sizes asked round to the same one).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..units import check_non_negative, check_positive
from .device import synchronize
from .distributed import check_world_size, launch, rank_device

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send")
SPLIT_OPS = ("all_gather", "reduce_scatter", "all_to_all")
# 4 B, 16 B, 64 B, ..., 64 MiB: powers of 4, the range in 13 sizes
DEFAULT_SIZES_BYTES = tuple(4 ** k for k in range(1, 14))

# all_gather_single and reduce_scatter_single are the newer names (torch >= 2.10)
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


@dataclass(frozen=True)
class CollectiveTiming:
    """One op at one size: median and fastest of the repeats, in seconds (the slowest rank's
    time in each repeat)."""

    op: str
    world_size: int
    message_bytes: int
    median_s: float
    min_s: float
    repeats: int
    backend: str
    threads: int


def timed_bytes(op: str, message_bytes: int, world_size: int, element_bytes: int) -> int:
    """The size `op` is timed at for a request of message_bytes: whole elements, and for the
    ops that split the tensor, a whole number of elements per rank (rounded up)."""
    unit = element_bytes * (world_size if op in SPLIT_OPS else 1)
    return max(1, math.ceil(message_bytes / unit)) * unit


def _check(ops: Sequence[str], world_size: int, sizes_bytes: Sequence[int], repeats: int,
           warmup: int) -> None:
    check_world_size(world_size)
    if isinstance(ops, str) or not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty sequence drawn from {OPS}, got {ops!r}")
    if "send" in ops and world_size < 2:
        raise ValueError("world_size must be >= 2 to time 'send' (rank 0 sends to rank 1)")
    if isinstance(sizes_bytes, (int, float)) or len(sizes_bytes) == 0:
        raise ValueError(f"sizes_bytes must be a non-empty sequence of sizes, got {sizes_bytes!r}")
    for size in sizes_bytes:
        check_positive("sizes_bytes", size, integer=True)
    check_positive("repeats", repeats, integer=True)
    check_non_negative("warmup", warmup, integer=True)


def measure_collectives(ops: Sequence[str] = ("all_reduce", "all_gather", "all_to_all"),
                        world_size: int = 2,
                        sizes_bytes: Sequence[int] = DEFAULT_SIZES_BYTES, repeats: int = 10,
                        warmup: int = 2, dtype: torch.dtype = torch.float32,
                        backend: str = "gloo",
                        threads: int | None = None) -> list[CollectiveTiming]:
    """Median seconds of each op in `ops` at each of `sizes_bytes` (see the module docstring),
    over `world_size` processes: one row per op and size timed, ops in the order given, sizes
    ascending. One launch for the whole sweep."""
    _check(ops, world_size, sizes_bytes, repeats, warmup)
    element = torch.empty((), dtype=dtype).element_size()
    plan = [(op, size) for op in ops
            for size in sorted({timed_bytes(op, s, world_size, element) for s in sizes_bytes})]
    run = launch(_time_plan, world_size, (plan, repeats, warmup, dtype, backend),
                 backend=backend, threads=threads)
    rows = []
    for i, (op, size) in enumerate(plan):
        # one repeat lasts as long as its slowest rank
        per_repeat = [max(rank[i][r] for rank in run.results) for r in range(repeats)]
        rows.append(CollectiveTiming(op, world_size, size, statistics.median(per_repeat),
                                     min(per_repeat), repeats, backend, run.threads))
    return rows


def _time_plan(rank: int, world_size: int, plan: list[tuple[str, int]], repeats: int,
               warmup: int, dtype: torch.dtype, backend: str) -> list[list[float]]:
    """Each rank's seconds for every (op, size) of the plan, repeat by repeat."""
    device = rank_device(rank, backend)
    out = []
    for op, size in plan:
        call = _collective(op, size // torch.empty((), dtype=dtype).element_size(),
                           rank, world_size, dtype, device)
        for _ in range(warmup):
            call()
        samples = []
        for _ in range(repeats):
            dist.barrier()
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            samples.append(time.perf_counter() - start)
        out.append(samples)
    return out


def _collective(op: str, elements: int, rank: int, world_size: int, dtype: torch.dtype,
                device: torch.device) -> Callable[[], object]:
    """A call of `op` on a tensor of `elements` elements, its buffers allocated once."""
    whole = torch.ones(elements, dtype=dtype, device=device)
    piece = torch.empty(elements // world_size, dtype=dtype, device=device)
    if op == "all_reduce":
        return lambda: dist.all_reduce(whole)
    if op == "all_gather":
        return lambda: _ALL_GATHER(whole, piece)
    if op == "reduce_scatter":
        return lambda: _REDUCE_SCATTER(piece, whole)
    if op == "all_to_all":
        received = torch.empty_like(whole)
        return lambda: dist.all_to_all_single(received, whole)
    if rank == 0:  # send
        return lambda: dist.send(whole, dst=1)
    if rank == 1:
        return lambda: dist.recv(whole, src=0)
    return lambda: None
