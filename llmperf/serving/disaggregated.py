"""Prefill and decode on separate instances, the KV cache moving between them:
`simulate_disaggregated` (after DistServe, Zhong et al., OSDI 2024, and Splitwise, Patel et
al., ISCA 2024).

- Prefill pool (`prefill_replicas` instances, step time `prefill_step_time`): each request
  is routed at its arrival to the least loaded instance (`llmperf.serving.cluster`), which
  runs its prompt only, under `simulate`'s policy (continuous, chunked, ...; FIFO). Its
  first token appears at the end of the iteration that completes its prompt, and the
  instance releases its KV memory then.
- Transfer: the KV cache then takes `kv_transfer_s(request)` seconds to reach the decode
  pool (`kv_transfer(model, link)` builds that function from the KV bytes and a `Link`);
  transfers of different requests overlap (no contention on the links).
- Decode pool (`decode_replicas` instances, `decode_step_time`): once its KV has arrived, a
  request is routed to the least loaded instance and joins its running batch at the next
  iteration boundary (an idle instance starts an iteration at once). It yields its
  remaining tokens there, one per iteration, the first in the iteration it joins: that
  iteration runs it as a one-token chunk after its transferred prompt (its first output
  token, at position prompt_tokens), which a step-time model costs like a decode.
  If the decode instance preempts it (paged memory), the recomputation is its own.
- A request of one output token finishes at its prefill and never moves.

`policy`, `max_batch` and the other `simulate` arguments apply to both pools, with
`simulate`'s defaults (prefix caching, where asked, on the prefill pool only).
`disaggregated_goodput` is DistServe's goodput per GPU of the two pools.
Timeline of the hand-worked case (one request, prompt 8, output 3, one-second iterations
on both sides, 0.5 s transfer): first token at 1.0 s, arrival at the decode instance at
1.5 s, tokens 2 and 3 at 2.5 s and 3.5 s, TPOT (3.5 - 1.0) / 2 = 1.25 s.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from ..analytic.parallel import kv_transfer_time
from ..hardware import Link
from ..models import ModelConfig, get_model
from ..units import check_positive
from .cluster import ClusterRun, route_and_run, simulate_arguments, simulate_cluster
from .goodput_search import max_goodput
from .instance import build_instance, check_instance_requests
from .memory import PagedMemory, ReservationMemory
from .metrics import RequestResult, RunRecorder, RunResult
from .requests import Request
from .sequence import Sequence


class _ArrivedKV:
    """A decode instance's KV memory: a request's prompt KV arrives with it, so at its first
    admission `admit` reports the prompt as cached (the scheduler then computes only the
    rest); a readmission after a preemption recomputes everything."""

    _arrived: frozenset[int] | set[int] = frozenset()

    def expect(self, request_ids: Seq[int]) -> None:
        self._arrived = set(request_ids)

    def admit(self, request_id: int, request: Request, tokens: int) -> int:
        cached = super().admit(request_id, request, tokens)
        if request_id in self._arrived:
            self._arrived.discard(request_id)
            return request.prompt_tokens
        return cached or 0


class _ArrivedReservation(_ArrivedKV, ReservationMemory):
    pass


class _ArrivedPaged(_ArrivedKV, PagedMemory):
    pass


def _decode_memory(args: dict[str, Any]) -> ReservationMemory | PagedMemory:
    if args["kv_memory"] == "paged":
        if args["reserve_tokens"] is not None or args["reserve_output_tokens"] is not None:
            raise ValueError("reserve_tokens and reserve_output_tokens apply to kv_memory "
                             "'reservation' only")
        return _ArrivedPaged(args["kv_capacity_tokens"], args["block_size"])
    if args["kv_memory"] == "reservation":
        return _ArrivedReservation(args["kv_capacity_tokens"], args["reserve_tokens"],
                                   args["reserve_output_tokens"])
    raise ValueError(f"kv_memory must be one of ('reservation', 'paged'), got "
                     f"{args['kv_memory']!r}")


@dataclass(frozen=True)
class DisaggregatedRun:
    """A disaggregated run: `run`, a `RunResult` over every request in the order given
    (first_token_s from its prefill, finish_s from its last decode; iterations of both
    pools, prefill first), and for each request its prefill replica, its decode replica
    (-1: one output token, never moved) and when its KV reached the decode pool
    (kv_arrival_s, equal to first_token_s when it never moved). `prefill` and `decode`
    are each pool's own `ClusterRun` (`decode` None when no request reaches it).

    Every attribute of a `RunResult` reads through (`requests`, `slo_attainment(...)`, ...).
    """

    run: RunResult
    prefill: ClusterRun
    decode: ClusterRun | None
    prefill_replica: tuple[int, ...]
    decode_replica: tuple[int, ...]
    kv_arrival_s: tuple[float, ...]

    def __getattr__(self, name: str) -> Any:
        if name == "run":  # not set yet (while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.run, name)


def kv_transfer(model: ModelConfig | str, link: Link | str,
                dtype: str = "fp16") -> Callable[[Request], float]:
    """kv_transfer_s for `simulate_disaggregated`: a request's prompt KV sent over `link`
    (`llmperf.analytic.parallel.kv_transfer_time`)."""
    m = get_model(model)
    kv_transfer_time(m, 1, link, dtype)  # check the link and dtype once
    return lambda request: kv_transfer_time(m, request.prompt_tokens, link, dtype)


def _transfer_times(requests: list[Request], kv_transfer_s: Callable[[Request], float]
                    ) -> list[float]:
    if not callable(kv_transfer_s):
        raise ValueError("kv_transfer_s must be a function of a request returning seconds, "
                         "such as kv_transfer(model, link)")
    seconds = [kv_transfer_s(r) for r in requests]
    for i, s in enumerate(seconds):
        if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
            raise ValueError(f"kv_transfer_s(requests[{i}]) must be finite seconds >= 0, "
                             f"got {s!r}")
    return [float(s) for s in seconds]


def simulate_disaggregated(requests: Seq[Request], prefill_replicas: int, decode_replicas: int,
                           prefill_step_time: Any, decode_step_time: Any,
                           kv_transfer_s: Callable[[Request], float],
                           **simulate_args: Any) -> DisaggregatedRun:
    """Serve `requests` on a pool of prefill instances and a pool of decode instances (see
    the module docstring). `simulate_args` are `simulate`'s (policy, max_batch, ...; not
    step_time, given per pool), for both pools. Every argument and request is checked
    before anything runs. Times in seconds."""
    check_positive("prefill_replicas", prefill_replicas, integer=True)
    check_positive("decode_replicas", decode_replicas, integer=True)
    if "step_time" in simulate_args:
        raise ValueError("give prefill_step_time and decode_step_time, not step_time")
    for name, step_time in (("prefill_step_time", prefill_step_time),
                            ("decode_step_time", decode_step_time)):
        if not callable(getattr(step_time, "iteration_s", None)):
            raise ValueError(f"{name} must have an iteration_s(batch) method, such as a "
                             "LinearStepTime or a RooflineStepTime")
    prefill_args = simulate_arguments({**simulate_args, "step_time": prefill_step_time})
    decode_args = {**prefill_args, "step_time": decode_step_time}
    decode_instances = [build_instance(**decode_args, memory=_decode_memory(decode_args))
                        for _ in range(int(decode_replicas))]
    requests = check_instance_requests(requests, decode_step_time, decode_instances[0][0])
    transfer_s = _transfer_times(requests, kv_transfer_s)
    prompts = [dataclasses.replace(r, output_tokens=1) for r in requests]
    prefill = simulate_cluster(prompts, prefill_replicas, "least_loaded", **prefill_args)
    first_s = [r.first_token_s for r in prefill.requests]
    moving = [i for i, r in enumerate(requests) if r.output_tokens > 1]
    decode = _decode_pool(requests, moving, first_s, transfer_s, decode_instances,
                          decode_args["policy"]) if moving else None
    return _merge(requests, prefill, decode, moving, first_s, transfer_s)


def _decode_pool(requests: list[Request], moving: list[int], first_s: list[float],
                 transfer_s: list[float], instances: list, policy: str) -> ClusterRun:
    """The decode pool's run over the requests that move, each arriving with its KV."""
    arriving = [dataclasses.replace(requests[i], arrival_s=first_s[i] + transfer_s[i])
                for i in moving]
    sequences = [Sequence(j, r) for j, r in enumerate(arriving)]
    for seq in sequences:
        seq.generated = 1  # its first token came from the prefill instance
    for scheduler, _ in instances:
        scheduler.memory.expect(range(len(sequences)))
    recorder = RunRecorder(policy, arriving)
    served, iteration_replica = route_and_run(
        sequences, instances, "least_loaded", recorder,
        prompt_done=[r.prompt_tokens for r in arriving])
    return ClusterRun(recorder.result(), "least_loaded", len(instances), tuple(served),
                      tuple(iteration_replica))


def _merge(requests: list[Request], prefill: ClusterRun, decode: ClusterRun | None,
           moving: list[int], first_s: list[float], transfer_s: list[float]
           ) -> DisaggregatedRun:
    finish_s, decode_replica, arrival_s = list(first_s), [-1] * len(requests), list(first_s)
    for j, i in enumerate(moving):
        finish_s[i] = decode.requests[j].finish_s
        decode_replica[i] = decode.replica[j]
        arrival_s[i] = first_s[i] + transfer_s[i]
    results = tuple(RequestResult(r, p.slot, p.admitted_s, first_s[i], finish_s[i])
                    for i, (r, p) in enumerate(zip(requests, prefill.requests)))
    iterations = prefill.iterations + (decode.iterations if decode is not None else ())
    run = RunResult(prefill.policy, results, iterations)
    return DisaggregatedRun(run, prefill, decode, prefill.replica, tuple(decode_replica),
                            tuple(arrival_s))


def disaggregated_goodput(workload: Callable[[float], Seq[Request]], ttft_s: float,
                          tpot_s: float, prefill_replicas: int, decode_replicas: int,
                          prefill_step_time: Any, decode_step_time: Any,
                          kv_transfer_s: Callable[[Request], float],
                          gpus_per_prefill_replica: int = 1, gpus_per_decode_replica: int = 1,
                          attainment: float = 0.9, max_rate_per_s: float = 100.0,
                          tolerance_per_s: float = 0.01, **simulate_args: Any) -> float:
    """Goodput per GPU of the two pools, as DistServe measures it: the highest rate at which
    `attainment` of `workload(rate)`'s requests meet both SLOs
    (`llmperf.serving.goodput_search.max_goodput`, over `simulate_disaggregated`), divided by
    prefill_replicas * gpus_per_prefill_replica + decode_replicas * gpus_per_decode_replica."""
    check_positive("prefill_replicas", prefill_replicas, integer=True)
    check_positive("decode_replicas", decode_replicas, integer=True)
    check_positive("gpus_per_prefill_replica", gpus_per_prefill_replica, integer=True)
    check_positive("gpus_per_decode_replica", gpus_per_decode_replica, integer=True)
    gpus = (prefill_replicas * gpus_per_prefill_replica
            + decode_replicas * gpus_per_decode_replica)
    rate = max_goodput(
        lambda r: simulate_disaggregated(workload(r), prefill_replicas, decode_replicas,
                                         prefill_step_time, decode_step_time, kv_transfer_s,
                                         **simulate_args),
        ttft_s, tpot_s, attainment, max_rate_per_s, tolerance_per_s)
    return rate / gpus
