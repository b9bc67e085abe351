"""The one driver loop of a serving run, shared by `simulate` and the engine.

    admit the arrived requests -> schedule an iteration -> run it -> record it -> advance

`serve` writes that loop once. What differs between a simulation and a real engine is the
clock: a `SimulatedClock` advances by what a step-time model predicts for each batch; a
`WallClock` reads the time once the engine has run the batch on a model (the engine's
`execute`). Times are in seconds since the run started, the origin of the arrivals.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Protocol

from .metrics import RunRecorder, RunResult
from .requests import Request
from .scheduler import Batch, Scheduler
from .sequence import Sequence


class StepTimeModel(Protocol):
    def iteration_s(self, batch: Batch) -> float: ...


class Clock(Protocol):
    """Time for the driver loop, in seconds since the run started."""

    def now(self) -> float:
        """The time now."""

    def end_of(self, batch: Batch) -> float:
        """Called once `batch` has run (if anything runs it): the time it ended, now."""

    def wait_until(self, t_s: float) -> None:
        """Idle until t_s (nothing runs and nobody waits)."""


class SimulatedClock:
    """Each iteration lasts what `step_time.iteration_s(batch)` says; idling jumps."""

    def __init__(self, step_time: StepTimeModel) -> None:
        if not callable(getattr(step_time, "iteration_s", None)):
            raise ValueError("step_time must have an iteration_s(batch) method, such as a "
                             "LinearStepTime or a RooflineStepTime")
        self.step_time, self._now = step_time, 0.0

    def now(self) -> float:
        return self._now

    def end_of(self, batch: Batch) -> float:
        seconds = self.step_time.iteration_s(batch)
        if not 0.0 <= seconds < float("inf"):  # also refuses NaN
            raise ValueError(f"step_time returned {seconds!r} s for iteration {batch.iteration}")
        self._now += seconds
        return self._now

    def wait_until(self, t_s: float) -> None:
        self._now = max(self._now, t_s)


class WallClock:
    """`time.perf_counter()` since construction; idling sleeps."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._start

    def end_of(self, batch: Batch) -> float:
        return self.now()

    def wait_until(self, t_s: float) -> None:
        time.sleep(max(0.0, t_s - self.now()))


def check_requests(requests: Seq[Request], max_context_tokens: int | None = None,
                   context_limit: str = "the step-time model's max_context_tokens"
                   ) -> list[Request]:
    """`requests` as a list, after checking it is a non-empty list of `Request` whose
    contexts (total_tokens - 1, the last token is never fed back) stay within
    `max_context_tokens` (None: no limit), named `context_limit` in the error."""
    requests = list(requests)
    if not requests or not all(isinstance(r, Request) for r in requests):
        raise ValueError("requests must be a non-empty list of llmperf.serving.Request")
    if max_context_tokens is not None:
        for i, r in enumerate(requests):
            if r.total_tokens - 1 > max_context_tokens:
                raise ValueError(f"requests[{i}] reaches {r.total_tokens - 1} tokens of "
                                 f"context, beyond {context_limit}={max_context_tokens}")
    return requests


def serve(sequences: list[Sequence], scheduler: Scheduler, clock: Clock,
          execute: Callable[[Batch], None] | None = None) -> RunResult:
    """Run every sequence to its last token; the result lists them in the order given.

    sequences[i].id must be i. Checks once that the scheduler's memory can ever hold each
    (`can_ever_fit`); the loop checks nothing. `execute(batch)`, if given, runs each batch
    (the engine's model) before the clock is asked when it ended.
    """
    memory = scheduler.memory
    for seq in sequences:
        memory.check_fit(seq.request, f"requests[{seq.id}]")
    requests = [seq.request for seq in sequences]
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_s)
    recorder = RunRecorder(scheduler.policy, requests)
    nxt, n = 0, len(requests)
    while recorder.finished < n:
        now = clock.now()
        while nxt < n and requests[order[nxt]].arrival_s <= now:
            scheduler.enqueue(sequences[order[nxt]])
            nxt += 1
        batch = scheduler.schedule()
        if batch is None:
            if nxt == n:
                raise RuntimeError("nothing can run and no request is left to arrive")
            clock.wait_until(requests[order[nxt]].arrival_s)
            continue
        if execute is not None:
            execute(batch)
        recorder.record(batch, now, clock.end_of(batch), scheduler.complete(batch))
    return recorder.result()
