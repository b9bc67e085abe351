"""Several identical serving instances behind a router: `simulate_cluster`.

Each replica is the single-instance simulator (its own `Scheduler`, KV memory and
`SimulatedClock`, built from `simulate`'s arguments by `llmperf.serving.instance`); a
replica spanning several GPUs takes a `TensorParallelStepTime` as its step_time. A router
sends every request, at its arrival, to one replica:

- "round_robin": request i (in the order given) to replica i mod R;
- "least_loaded": the replica with the fewest outstanding tokens at the arrival, ties to
  the lowest index. A request's outstanding tokens are its prompt tokens not yet prefilled
  plus its output tokens not yet generated; a replica's, the sum over the requests routed
  to it and not finished. An iteration's tokens count as done at the iteration's end;
  a prompt prefilled again after a preemption (or found in a prefix cache) is not work
  counted twice;
- "prefix": the replica whose prefix cache holds the longest prefix of the request's
  prompt (`PagedMemory.cached_prefix_tokens`; needs kv_memory="paged",
  prefix_caching=True and requests with `prompt_ids`), ties by the least_loaded rule.
  A replica's cache is seen as of its last iteration that started before the arrival.

The replicas advance together in simulated time: before a request is routed, each runs
every iteration that starts before its arrival (`DriverLoop.step(before_s=...)`), so the
router sees each as it stands then. Requests arriving at the same time are routed one
after another in the order given, each seeing the ones before it.

`cluster_goodput` is DistServe's goodput per GPU of such a cluster.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from ..units import check_positive
from .driver import DriverLoop, SimulatedClock
from .goodput_search import max_goodput
from .instance import build_instance, check_instance_requests
from .metrics import RunRecorder, RunResult
from .requests import Request
from .scheduler import Batch, Outcome, Scheduler
from .sequence import Sequence
from .simulator import simulate

ROUTERS = ("round_robin", "least_loaded", "prefix")


@dataclass(frozen=True)
class ClusterRun:
    """A cluster's run: `run`, a `RunResult` over every request in the order given and every
    iteration of every replica, and which replica served each request (`replica[i]`) and
    ran each iteration (`iteration_replica[j]` for `run.iterations[j]`).

    Every attribute of a `RunResult` reads through (`requests`, `makespan_s`,
    `slo_attainment(...)`, ...). Time-weighted means over iterations (`mean_in_flight`,
    `kv_utilization`) are per replica, averaged over the replicas' iterations.
    """

    run: RunResult
    router: str
    replicas: int
    replica: tuple[int, ...]
    iteration_replica: tuple[int, ...]

    def __getattr__(self, name: str) -> Any:
        if name == "run":  # not set yet (while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.run, name)

    def requests_served(self) -> list[int]:
        """How many requests each replica served."""
        counts = [0] * self.replicas
        for k in self.replica:
            counts[k] += 1
        return counts


class _Replica:
    """One instance: its driver loop, and its outstanding tokens (see the module docstring)."""

    def __init__(self, index: int, scheduler: Scheduler, clock: SimulatedClock,
                 recorder: RunRecorder, iteration_replica: list[int],
                 requests: list[Request]) -> None:
        self.index, self.memory = index, scheduler.memory
        self.loop = DriverLoop(scheduler, clock, self._record)
        self._recorder, self._iteration_replica, self._requests = (
            recorder, iteration_replica, requests)
        self.outstanding = 0          # tokens, once every iteration run so far has ended
        self._last_end_s, self._last_done = 0.0, 0
        self._prompt_done: dict[int, int] = {}  # request id -> prompt tokens prefilled

    def add(self, seq: Sequence, prompt_done: int = 0) -> None:
        """Route `seq` here; `prompt_done` of its prompt tokens already hold their KV (and
        seq.generated of its output tokens are out) when it arrives."""
        self.outstanding += seq.request.total_tokens - prompt_done - seq.generated
        if prompt_done:
            self._prompt_done[seq.id] = prompt_done
        self.loop.add(seq)

    def advance(self, t_s: float) -> None:
        """Run every iteration that starts before t_s."""
        step = self.loop.step
        while step(t_s):
            pass

    def outstanding_at(self, t_s: float) -> int:
        """Outstanding tokens at t_s: the last iteration run counts only if it has ended."""
        return self.outstanding + (self._last_done if self._last_end_s > t_s else 0)

    def _record(self, batch: Batch, start_s: float, end_s: float, outcome: Outcome) -> None:
        self._recorder.record(batch, start_s, end_s, outcome)
        self._iteration_replica.append(self.index)
        done = len(batch.decode)  # one token each
        prompt_done = self._prompt_done
        for chunk in batch.prefill:
            rid = chunk.request_id
            reached = min(chunk.start_tokens + chunk.tokens, self._requests[rid].prompt_tokens)
            before = prompt_done.get(rid, 0)
            if reached > before:
                done += reached - before
                prompt_done[rid] = reached
            done += chunk.completes_prompt  # the token its last position yields
        for rid in outcome.finished:
            prompt_done.pop(rid, None)
        self.outstanding -= done
        self._last_end_s, self._last_done = end_s, done


def simulate_arguments(simulate_args: dict[str, Any]) -> dict[str, Any]:
    """`simulate`'s keyword arguments with its defaults filled in (what
    `llmperf.serving.instance.build_instance` takes); ValueError naming any argument
    `simulate` does not take (or `requests`, given separately)."""
    params = inspect.signature(simulate).parameters
    names = [name for name in params if name != "requests"]
    for name in simulate_args:
        if name not in names:
            raise ValueError(f"{name!r} is not an argument of simulate; it takes {names}")
    return {name: simulate_args.get(name, params[name].default) for name in names}


def _least_loaded(replicas: list[_Replica], t_s: float) -> int:
    loads = [rep.outstanding_at(t_s) for rep in replicas]
    return loads.index(min(loads))


def _longest_prefix(replicas: list[_Replica], request: Request, t_s: float) -> int:
    cached = [rep.memory.cached_prefix_tokens(request) for rep in replicas]
    best = max(cached)
    tied = [rep for rep, c in zip(replicas, cached) if c == best]
    return tied[_least_loaded(tied, t_s)].index


def _check_router(router: str, args: dict[str, Any]) -> None:
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    if router == "prefix" and not (args["kv_memory"] == "paged" and args.get("prefix_caching")):
        raise ValueError("router 'prefix' needs kv_memory='paged' and prefix_caching=True")


def route_and_run(sequences: list[Sequence], instances: list[tuple[Scheduler, SimulatedClock]],
                  router: str, recorder: RunRecorder,
                  prompt_done: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Route each sequence at its arrival to one of the instances under `router` and run
    them all to the end, recording into `recorder` (sequences[i].id == i, checked by the
    caller). prompt_done[i]: prompt tokens of sequence i whose KV arrives with it (default
    none). Returns the replica of each sequence and the replica of each iteration recorded.
    """
    requests = [seq.request for seq in sequences]
    iteration_replica: list[int] = []
    reps = [_Replica(k, scheduler, clock, recorder, iteration_replica, requests)
            for k, (scheduler, clock) in enumerate(instances)]
    served = [0] * len(sequences)
    for i in sorted(range(len(requests)), key=lambda i: requests[i].arrival_s):
        t_s = requests[i].arrival_s
        for rep in reps:
            rep.advance(t_s)
        if router == "round_robin":
            k = i % len(reps)
        elif router == "least_loaded":
            k = _least_loaded(reps, t_s)
        else:
            k = _longest_prefix(reps, requests[i], t_s)
        served[i] = k
        reps[k].add(sequences[i], 0 if prompt_done is None else prompt_done[i])
    for rep in reps:
        rep.advance(float("inf"))
    if recorder.finished < len(requests):
        raise RuntimeError("nothing can run and no request is left to arrive")
    return served, iteration_replica


def simulate_cluster(requests: Seq[Request], replicas: int, router: str = "least_loaded",
                     **simulate_args: Any) -> ClusterRun:
    """Serve `requests` on `replicas` identical instances behind `router` (see the module
    docstring); `simulate_args` are `simulate`'s (policy, max_batch, step_time,
    kv_capacity_tokens, ...), with its defaults, for every replica.

    Every argument and request is checked once, before anything runs. Returns a
    `ClusterRun`: the requests in the order given, times in seconds, and the replica of each.
    """
    check_positive("replicas", replicas, integer=True)
    args = simulate_arguments(simulate_args)
    _check_router(router, args)
    instances = [build_instance(**args) for _ in range(int(replicas))]
    requests = check_instance_requests(requests, args["step_time"], instances[0][0])
    recorder = RunRecorder(args["policy"], requests)
    served, iteration_replica = route_and_run(
        [Sequence(i, r) for i, r in enumerate(requests)], instances, router, recorder)
    return ClusterRun(recorder.result(), router, len(instances), tuple(served),
                      tuple(iteration_replica))


def cluster_goodput(workload: Callable[[float], Seq[Request]], ttft_s: float, tpot_s: float,
                    replicas: int, router: str = "least_loaded", gpus_per_replica: int = 1,
                    attainment: float = 0.9, max_rate_per_s: float = 100.0,
                    tolerance_per_s: float = 0.01, **simulate_args: Any) -> float:
    """Goodput per GPU of `replicas` instances of `gpus_per_replica` GPUs each: the highest
    rate at which `attainment` of `workload(rate)`'s requests meet both SLOs
    (`llmperf.serving.goodput_search.max_goodput`, over `simulate_cluster`), divided by the GPUs."""
    check_positive("replicas", replicas, integer=True)
    check_positive("gpus_per_replica", gpus_per_replica, integer=True)
    rate = max_goodput(
        lambda r: simulate_cluster(workload(r), replicas, router, **simulate_args),
        ttft_s, tpot_s, attainment, max_rate_per_s, tolerance_per_s)
    return rate / (replicas * gpus_per_replica)
