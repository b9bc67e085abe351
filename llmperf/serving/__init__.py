"""Serving one model instance: requests, scheduling policies, step times, metrics.

Torch-free. One driver loop (`serve`: admit, schedule an iteration, run it, record it,
advance) runs the `Scheduler` for both `simulate` and the engine
(`llmperf.measured.engine.Engine`); only the clock differs: `simulate`'s `SimulatedClock`
advances by what a step-time model (`LinearStepTime`, `RooflineStepTime`) predicts, the
engine's `WallClock` is read after running the model. Both return the same `RunResult`,
and both track a request's running state in one `Sequence`. KV memory is either reserved
per request (`ReservationMemory`) or paged in blocks with preemption by recompute
(`PagedMemory`, over a `BlockAllocator` of block tables with reference counts and copy on
write); `simulate(..., kv_memory="paged")` picks the second, and `prefix_caching=True` adds
automatic prefix caching (a `PrefixCachingAllocator`; workloads whose requests carry
`prompt_ids`: `shared_prefix_workload`, `multi_turn_workload`). The engine's stop tokens end
a request early through `Scheduler.finish_early`.

    from llmperf.serving import Request, LinearStepTime, simulate
    reqs = [Request(arrival_s=0.0, prompt_tokens=8, output_tokens=n) for n in (1, 2, 3, 10)]
    run = simulate(reqs, policy="continuous", max_batch=4,
                   step_time=LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0))
    run.requests[3].finish_s   # 10.0: ten one-second iterations
"""
from .cluster import ROUTERS, ClusterRun, cluster_goodput, simulate_cluster
from .disaggregated import (
    DisaggregatedRun,
    disaggregated_goodput,
    kv_transfer,
    simulate_disaggregated,
)
from .driver import Clock, DriverLoop, SimulatedClock, WallClock, check_requests, serve
from .goodput_search import highest_rate, max_goodput
from .instance import build_instance, check_instance_requests
from .memory import MEMORY_POLICIES, PagedMemory, ReservationMemory, make_memory
from .metrics import METRICS, Iteration, RequestResult, RunRecorder, RunResult
from .paging import (
    BlockAllocator,
    OutOfBlocks,
    blocks_needed,
    internal_fragmentation,
    kv_utilization,
    paged_requests_that_fit,
    reserved_requests_that_fit,
    shared_prefix_blocks,
    shared_sampling_blocks,
)
from .parallel_steptime import TensorParallelStepTime
from .prefix_cache import PrefixCachingAllocator
from .requests import (
    CHAT_CAP_TOKENS,
    DEFAULT_VOCAB_SIZE,
    SHAREGPT_MEAN_OUTPUT_TOKENS,
    SHAREGPT_MEAN_PROMPT_TOKENS,
    THROUGHPUT_CAPS_TOKENS,
    Exponential,
    Fixed,
    LogNormal,
    Request,
    Uniform,
    chat_workload,
    multi_turn_workload,
    poisson_arrivals,
    shared_prefix_workload,
    throughput_workload,
    workload,
)
from .scheduler import POLICIES, Batch, Chunk, Outcome, Scheduler
from .sequence import Sequence
from .simulator import StepTimeModel, goodput, simulate
from .steptime import LinearStepTime, RooflineStepTime, fit_linear_step_time

__all__ = [
    "CHAT_CAP_TOKENS", "MEMORY_POLICIES", "METRICS", "POLICIES", "BlockAllocator", "OutOfBlocks",
    "PagedMemory", "blocks_needed", "internal_fragmentation", "kv_utilization", "make_memory",
    "paged_requests_that_fit", "reserved_requests_that_fit", "shared_prefix_blocks",
    "shared_sampling_blocks",
    "SHAREGPT_MEAN_OUTPUT_TOKENS",
    "SHAREGPT_MEAN_PROMPT_TOKENS", "THROUGHPUT_CAPS_TOKENS", "Batch", "Chunk", "Exponential",
    "Fixed", "Iteration", "LinearStepTime", "LogNormal", "Outcome", "Request", "RequestResult",
    "ReservationMemory", "RooflineStepTime", "RunRecorder", "RunResult", "Scheduler",
    "StepTimeModel", "Uniform", "chat_workload", "fit_linear_step_time", "goodput",
    "poisson_arrivals", "simulate", "throughput_workload", "workload",
    "Clock", "Sequence", "SimulatedClock", "WallClock", "check_requests", "serve",
    "DEFAULT_VOCAB_SIZE", "PrefixCachingAllocator", "multi_turn_workload",
    "shared_prefix_workload",
    "ROUTERS", "ClusterRun", "DisaggregatedRun", "DriverLoop", "TensorParallelStepTime",
    "build_instance", "check_instance_requests", "cluster_goodput", "disaggregated_goodput",
    "highest_rate", "kv_transfer", "max_goodput", "simulate_cluster", "simulate_disaggregated",
]
