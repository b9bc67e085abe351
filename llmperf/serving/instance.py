"""One simulated serving instance, built from `simulate`'s arguments: a `Scheduler` over
fresh KV memory, and a `SimulatedClock` for its step-time model.

`build_instance` takes `simulate`'s arguments by the same names and defaults, so a cluster
(`llmperf.serving.cluster`) builds each replica as `simulate` builds its one instance;
`check_instance_requests` checks a workload once against an instance, as `simulate` does.
"""
from __future__ import annotations

from collections.abc import Sequence as Seq

from .driver import SimulatedClock, StepTimeModel, check_requests
from .memory import PagedMemory, ReservationMemory, make_memory
from .requests import Request
from .scheduler import Scheduler


def build_instance(step_time: StepTimeModel | None, policy: str = "continuous",
                   max_batch: int = 8, kv_capacity_tokens: int | None = None,
                   token_budget: int | None = None, kv_memory: str = "reservation",
                   block_size: int = 16, reserve_tokens: int | None = None,
                   prefix_caching: bool = False,
                   memory: ReservationMemory | PagedMemory | None = None,
                   reserve_output_tokens: int | None = None
                   ) -> tuple[Scheduler, SimulatedClock]:
    """A scheduler and a simulated clock from `simulate`'s arguments (see `simulate`);
    `memory`, if given, replaces the KV memory `make_memory` would build from them. Each
    constructor checks its own arguments."""
    if step_time is None:
        raise ValueError("step_time is required: a LinearStepTime or a RooflineStepTime")
    clock = SimulatedClock(step_time)
    if memory is None:
        memory = make_memory(kv_memory, kv_capacity_tokens, block_size, reserve_tokens,
                             prefix_caching, reserve_output_tokens)
    return Scheduler(policy, max_batch, token_budget, memory), clock


def check_instance_requests(requests: Seq[Request], step_time: StepTimeModel,
                            scheduler: Scheduler) -> list[Request]:
    """`requests` as a list, checked once as `simulate` checks them: each context within
    the step-time model's `max_context_tokens` (if it has one), and each request within
    what the instance's KV memory can ever hold."""
    requests = check_requests(requests, getattr(step_time, "max_context_tokens", None))
    for i, request in enumerate(requests):
        scheduler.memory.check_fit(request, f"requests[{i}]")
    return requests
