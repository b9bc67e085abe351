"""The one driver loop of a serving run, shared by `simulate` and the engine.

    admit the arrived requests -> schedule an iteration -> run it -> record it -> advance

`DriverLoop` writes that loop once, one pass at a time, and `serve` runs it to the end.
What differs between a simulation and a real engine is the clock: a `SimulatedClock`
advances by what a step-time model predicts for each batch; a `WallClock` reads the time
once the engine has run the batch on a model (the engine's `execute`). Times are in
seconds since the run started, the origin of the arrivals. A cluster of instances
(`llmperf.serving.cluster`) steps one `DriverLoop` per instance, each up to the next
arrival, so that a router sees every instance as it stands when a request arrives.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Protocol

from .metrics import RunRecorder, RunResult
from .requests import Request
from .scheduler import Batch, Outcome, Scheduler
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
    """`time.perf_counter()` since construction; idling sleeps, then spins for its last
    `spin_s` seconds.

    A server wakes when a request arrives; a timer wakes late (by up to a millisecond or
    so, the operating system's timer slack), which would count as the request's waiting
    time and, for requests served in a few milliseconds, dominate their TTFT. So the wait
    sleeps until `spin_s` before the arrival and checks the clock in a loop after that.
    """

    spin_s = 2e-3

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._start

    def end_of(self, batch: Batch) -> float:
        return self.now()

    def wait_until(self, t_s: float) -> None:
        time.sleep(max(0.0, t_s - self.now() - self.spin_s))
        while self.now() < t_s:
            pass


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


class DriverLoop:
    """One instance's driver loop, a pass at a time: admit the requests that have arrived,
    schedule an iteration, run it, record it; or idle until the next arrival.

    Sequences join with `add` in order of arrival (each is queued once the clock has
    reached its arrival_s); `step` makes one pass; `record(batch, start_s, end_s,
    outcome)` is told of every iteration that runs (a `RunRecorder.record`). The caller
    has checked each sequence against the scheduler's memory (`check_fit`).
    """

    def __init__(self, scheduler: Scheduler, clock: Clock,
                 record: Callable[[Batch, float, float, Outcome], None],
                 execute: Callable[[Batch], None] | None = None) -> None:
        self.scheduler, self.clock, self._record, self._execute = scheduler, clock, record, execute
        self._arrivals: deque[Sequence] = deque()  # added, not yet queued, by arrival

    def add(self, seq: Sequence) -> None:
        """A sequence that arrives at seq.request.arrival_s, no earlier than those added."""
        self._arrivals.append(seq)

    @property
    def pending(self) -> int:
        """Sequences added whose arrival the clock has not yet reached."""
        return len(self._arrivals)

    def step(self, before_s: float = math.inf) -> bool:
        """One pass, if it starts before `before_s`: queue the arrived sequences, then run
        an iteration, or idle until the next arrival if nothing can run. False when it did
        neither: the clock has reached before_s, or nothing can run and no sequence added
        is left to arrive (or the next arrives at before_s or later)."""
        now = self.clock.now()
        if now >= before_s:
            return False
        arrivals, scheduler = self._arrivals, self.scheduler
        while arrivals and arrivals[0].request.arrival_s <= now:
            scheduler.enqueue(arrivals.popleft())
        batch = scheduler.schedule()
        if batch is None:
            if not arrivals or arrivals[0].request.arrival_s >= before_s:
                return False
            self.clock.wait_until(arrivals[0].request.arrival_s)
            return True
        if self._execute is not None:
            self._execute(batch)
        self._record(batch, now, self.clock.end_of(batch), scheduler.complete(batch))
        return True


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
    recorder = RunRecorder(scheduler.policy, requests)
    loop = DriverLoop(scheduler, clock, recorder.record, execute)
    for i in sorted(range(len(requests)), key=lambda i: requests[i].arrival_s):
        loop.add(sequences[i])
    while recorder.finished < len(requests):
        if not loop.step():
            raise RuntimeError("nothing can run and no request is left to arrive")
    return recorder.result()
