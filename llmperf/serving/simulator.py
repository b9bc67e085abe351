"""The discrete-event simulator of one serving instance, and goodput found with it.

`simulate` runs the shared driver loop (`llmperf.serving.driver.serve`) on a
`SimulatedClock`: each iteration lasts what the step-time model says; requests join the
queue once the clock has reached their arrival; when nothing runs and nobody waits, the
clock jumps to the next arrival. Times are in seconds.
"""
from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq

from .driver import StepTimeModel, check_requests, serve
from .goodput_search import max_goodput
from .instance import build_instance
from .metrics import RunResult
from .requests import Request
from .sequence import Sequence

__all__ = ["StepTimeModel", "goodput", "simulate"]


def simulate(requests: Seq[Request], policy: str = "continuous", max_batch: int = 8,
             step_time: StepTimeModel | None = None, kv_capacity_tokens: int | None = None,
             token_budget: int | None = None, kv_memory: str = "reservation",
             block_size: int = 16, reserve_tokens: int | None = None,
             prefix_caching: bool = False,
             reserve_output_tokens: int | None = None) -> RunResult:
    """Serve `requests` on one instance under `policy`; times come from `step_time`.

    policy: "static", "continuous" or "chunked" (which needs `token_budget`, in tokens per
    iteration); see `llmperf.serving.scheduler` for their exact semantics.
    kv_capacity_tokens: KV memory in tokens (None: unlimited). kv_memory: "reservation",
    each request reserving its prompt and output at admission (or `reserve_tokens` each, or
    its prompt and `reserve_output_tokens`, the cap a server knows), or "paged", blocks of
    `block_size` tokens taken as tokens arrive, with preemption by recompute
    (`llmperf.serving.memory`). prefix_caching (paged only): full prompt blocks stay cached
    by content and later requests whose `prompt_ids` begin alike reuse them,
    computing only the rest of their prompts (`PagedMemory`; the run's `prefix_hit_rate`).
    Every argument is checked here, once, and every
    request before the first iteration runs. The result lists the requests in the order
    given, times in seconds.
    """
    scheduler, clock = build_instance(step_time, policy, max_batch, kv_capacity_tokens,
                                      token_budget, kv_memory, block_size, reserve_tokens,
                                      prefix_caching,
                                      reserve_output_tokens=reserve_output_tokens)
    requests = check_requests(requests, getattr(step_time, "max_context_tokens", None))
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
    return max_goodput(lambda rate: simulate(workload(rate), **simulate_args), ttft_s, tpot_s,
                       attainment, max_rate_per_s, tolerance_per_s)
