"""The discrete-event simulator of one serving instance, and goodput found with it.

`simulate` runs the shared driver loop (`llmperf.serving.driver.serve`) on a
`SimulatedClock`: each iteration lasts what the step-time model says; requests join the
queue once the clock has reached their arrival; when nothing runs and nobody waits, the
clock jumps to the next arrival. Times are in seconds.
"""
from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq

from ..units import check_positive
from .driver import SimulatedClock, StepTimeModel, check_requests, serve
from .memory import make_memory
from .metrics import RunResult
from .requests import Request
from .scheduler import Scheduler
from .sequence import Sequence

__all__ = ["StepTimeModel", "goodput", "simulate"]


def simulate(requests: Seq[Request], policy: str = "continuous", max_batch: int = 8,
             step_time: StepTimeModel | None = None, kv_capacity_tokens: int | None = None,
             token_budget: int | None = None, kv_memory: str = "reservation",
             block_size: int = 16, reserve_tokens: int | None = None,
             prefix_caching: bool = False) -> RunResult:
    """Serve `requests` on one instance under `policy`; times come from `step_time`.

    policy: "static", "continuous" or "chunked" (which needs `token_budget`, in tokens per
    iteration); see `llmperf.serving.scheduler` for their exact semantics.
    kv_capacity_tokens: KV memory in tokens (None: unlimited). kv_memory: "reservation",
    each request reserving its prompt and output at admission (or `reserve_tokens` each),
    or "paged", blocks of `block_size` tokens taken as tokens arrive, with preemption by
    recompute (`llmperf.serving.memory`). prefix_caching (paged only): full prompt blocks
    stay cached by content and later requests whose `prompt_ids` begin alike reuse them,
    computing only the rest of their prompts (`PagedMemory`; the run's `prefix_hit_rate`).
    Every argument is checked here, once, and every
    request before the first iteration runs. The result lists the requests in the order
    given, times in seconds.
    """
    if step_time is None:
        raise ValueError("step_time is required: a LinearStepTime or a RooflineStepTime")
    clock = SimulatedClock(step_time)
    requests = check_requests(requests, getattr(step_time, "max_context_tokens", None))
    memory = make_memory(kv_memory, kv_capacity_tokens, block_size, reserve_tokens,
                         prefix_caching)
    scheduler = Scheduler(policy, max_batch, token_budget, memory)
    return serve([Sequence(i, r) for i, r in enumerate(requests)], scheduler, clock)


def goodput(workload: Callable[[float], Sequence[Request]], ttft_s: float, tpot_s: float,
            attainment: float = 0.9, max_rate_per_s: float = 100.0,
            tolerance_per_s: float = 0.01, **simulate_args) -> float:
    """The highest request rate (per second) at which `attainment` of requests meet both SLOs.

    DistServe's goodput (Zhong et al., "DistServe: Disaggregating Prefill and Decoding for
    Goodput-optimized Large Language Model Serving", OSDI 2024): the maximum rate served
    while the SLO attainment goal holds, here for one instance. `workload(rate)` returns the
    requests at that Poisson rate (seeded, so each rate is one fixed sample); the rest of
    the arguments go to `simulate`. Bisection on [0, max_rate_per_s] to `tolerance_per_s`,
    assuming attainment falls as the rate grows (true on average; a finite sample can
    wobble, so the answer is a rate that meets the goal next to one that does not).
    Returns 0.0 if no rate down to the tolerance meets it; ValueError if max_rate_per_s
    already does (raise it).
    """
    check_positive("ttft_s", ttft_s)
    check_positive("tpot_s", tpot_s)
    check_positive("attainment", attainment)
    if attainment > 1:
        raise ValueError(f"attainment must be in (0, 1], got {attainment!r}")
    check_positive("max_rate_per_s", max_rate_per_s)
    check_positive("tolerance_per_s", tolerance_per_s)

    def meets(rate: float) -> bool:
        run = simulate(workload(rate), **simulate_args)
        return run.slo_attainment(ttft_s, tpot_s) >= attainment

    if meets(max_rate_per_s):
        raise ValueError(f"max_rate_per_s={max_rate_per_s} already meets the goal: raise it")
    low, high = 0.0, max_rate_per_s
    while high - low > tolerance_per_s:
        mid = (low + high) / 2
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low
