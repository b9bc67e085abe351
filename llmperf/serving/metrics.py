"""What a serving run produced: per-request times and metrics, iterations, run metrics.

`RunRecorder` turns the scheduler's batches and outcomes, stamped with start and end
times by the driver loop's clock (`llmperf.serving.driver`: simulated, or the wall clock
of an engine), into a `RunResult`.

Definitions (times in seconds from the same origin as the arrivals):
- TTFT = first_token_s - arrival_s: queueing plus the prefill, up to the first token.
- TPOT = (finish_s - first_token_s) / (output_tokens - 1): the mean gap between later
  tokens. None for a one-token output, which has no later tokens.
- latency_s = finish_s - arrival_s (end to end).
- makespan_s = last finish - first arrival; throughput_tok_s = output tokens / makespan_s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..units import check_non_negative, check_positive
from .requests import Request
from .scheduler import Batch, Chunk, Outcome

METRICS = ("ttft_s", "tpot_s", "latency_s")


@dataclass(frozen=True)
class RequestResult:
    """One request's timeline: admitted_s is the start of the iteration that first admitted
    it, slot the slot it took then (a preempted request may come back in another)."""

    request: Request
    slot: int
    admitted_s: float
    first_token_s: float
    finish_s: float

    @property
    def arrival_s(self) -> float:
        return self.request.arrival_s

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.request.arrival_s

    @property
    def tpot_s(self) -> float | None:
        n = self.request.output_tokens
        return None if n == 1 else (self.finish_s - self.first_token_s) / (n - 1)

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.request.arrival_s

    def meets(self, ttft_s: float, tpot_s: float) -> bool:
        """Both limits hold; a one-token output has no TPOT and is judged on TTFT alone."""
        tpot = self.tpot_s
        return self.ttft_s <= ttft_s and (tpot is None or tpot <= tpot_s)


@dataclass(frozen=True)
class Iteration:
    """One iteration: when it ran, its prefill chunks, the requests it decoded, those
    preempted before it, and the KV slots held and holding a token (see `Batch`)."""

    index: int
    start_s: float
    end_s: float
    prefill: tuple[Chunk, ...]
    decode: tuple[int, ...]
    preempted: tuple[int, ...] = ()
    kv_held_tokens: int = 0
    kv_used_tokens: int = 0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def kv_unused_tokens(self) -> int:
        """Held KV slots holding no token: under paging, internal fragmentation (the empty
        slots of last blocks); under reservation, slots kept for tokens not yet generated."""
        return self.kv_held_tokens - self.kv_used_tokens

    @property
    def in_flight(self) -> int:
        """Requests this iteration ran: its prefill chunks and its decodes."""
        return len(self.prefill) + len(self.decode)


@dataclass(frozen=True)
class RunResult:
    """A whole run: `requests` in the order they were given, and every iteration."""

    policy: str
    requests: tuple[RequestResult, ...]
    iterations: tuple[Iteration, ...]

    @property
    def makespan_s(self) -> float:
        return max(r.finish_s for r in self.requests) - min(r.arrival_s for r in self.requests)

    @property
    def output_tokens(self) -> int:
        return sum(r.request.output_tokens for r in self.requests)

    @property
    def throughput_tok_s(self) -> float:
        """Output tokens per second over the makespan."""
        return self.output_tokens / self.makespan_s

    @property
    def preemptions(self) -> int:
        """Times a request's KV was dropped, to be recomputed."""
        return sum(len(it.preempted) for it in self.iterations)

    @property
    def peak_kv_held_tokens(self) -> int:
        return max(it.kv_held_tokens for it in self.iterations)

    def _time_mean(self, values: list[float]) -> float:
        """Mean over the iterations weighted by their durations (plain mean if all last 0 s)."""
        w = np.array([it.duration_s for it in self.iterations])
        v = np.array(values, dtype=float)
        return float(v.mean() if w.sum() == 0 else (v * w).sum() / w.sum())

    @property
    def mean_in_flight(self) -> float:
        """Requests per iteration, averaged over time."""
        return self._time_mean([it.in_flight for it in self.iterations])

    @property
    def kv_utilization(self) -> float:
        """Share of held KV slots that hold a token, over time: sum(used dt) / sum(held dt)."""
        held = self._time_mean([it.kv_held_tokens for it in self.iterations])
        used = self._time_mean([it.kv_used_tokens for it in self.iterations])
        return 1.0 if held == 0 else used / held

    def values(self, metric: str) -> np.ndarray:
        """Every request's `metric` ('ttft_s', 'tpot_s' or 'latency_s'); TPOT skips Nones."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        vals = [getattr(r, metric) for r in self.requests]
        return np.array([v for v in vals if v is not None], dtype=float)

    def percentile(self, metric: str, q: float) -> float:
        """The q-th percentile (0..100, linear interpolation) of `metric` over requests."""
        check_non_negative("q", q)
        if q > 100:
            raise ValueError(f"q must be in [0, 100], got {q!r}")
        vals = self.values(metric)
        if vals.size == 0:
            raise ValueError(f"no request has a {metric} (every output is one token)")
        return float(np.percentile(vals, q))

    def slo_attainment(self, ttft_s: float, tpot_s: float) -> float:
        """Fraction of requests meeting both limits (see `RequestResult.meets`)."""
        check_positive("ttft_s", ttft_s)
        check_positive("tpot_s", tpot_s)
        return sum(r.meets(ttft_s, tpot_s) for r in self.requests) / len(self.requests)


class RunRecorder:
    """Collects timed iterations into a `RunResult`; the driver loop, shared by the
    simulator and the engine, fills it."""

    def __init__(self, policy: str, requests: list[Request]) -> None:
        self.policy, self._requests = policy, requests
        n = len(requests)
        self._slot, self._admitted_s = [-1] * n, [0.0] * n
        self._first_s, self._finish_s = [-1.0] * n, [-1.0] * n
        self._iterations: list[Iteration] = []
        self.finished = 0

    def record(self, batch: Batch, start_s: float, end_s: float, outcome: Outcome) -> None:
        """One iteration that ran from start_s to end_s and yielded `outcome`."""
        if not start_s <= end_s:
            raise ValueError(f"end_s ({end_s!r}) must be >= start_s ({start_s!r})")
        for request_id, slot in batch.admitted:  # a readmitted request keeps its first
            if self._slot[request_id] < 0:
                self._slot[request_id], self._admitted_s[request_id] = slot, start_s
        for request_id in outcome.first_token:
            self._first_s[request_id] = end_s
        for request_id in outcome.finished:
            self._finish_s[request_id] = end_s
        self.finished += len(outcome.finished)
        self._iterations.append(Iteration(batch.iteration, start_s, end_s, batch.prefill,
                                          batch.decode, batch.preempted, batch.kv_held_tokens,
                                          batch.kv_used_tokens))

    def result(self) -> RunResult:
        if self.finished != len(self._requests):
            raise ValueError(f"{len(self._requests) - self.finished} requests have not finished")
        reqs = tuple(RequestResult(r, *fields) for r, *fields in zip(
            self._requests, self._slot, self._admitted_s, self._first_s, self._finish_s))
        return RunResult(self.policy, reqs, tuple(self._iterations))
