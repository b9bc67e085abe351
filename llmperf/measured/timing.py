"""Time any function: `benchmark` calls it repeatedly and returns a `Timing`.

Work queued on a GPU is waited for before the clock starts and before it stops, so each
sample is the call's real duration, not its launch time: on `device` when it is given, else
on every accelerator torch has started in this process (the tensors fn touches are there).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..units import check_non_negative, check_positive, format_seconds
from .device import synchronize


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated calls: median, fastest, interquartile range, every sample."""

    median_s: float
    min_s: float
    iqr_s: float
    samples_s: tuple[float, ...]
    threads: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = 5 %)."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0

    def __str__(self) -> str:
        return (f"median {format_seconds(self.median_s)} (IQR {format_seconds(self.iqr_s)}, "
                f"min {format_seconds(self.min_s)}, {len(self.samples_s)} runs, "
                f"{self.threads} threads)")


def started_accelerators() -> list[torch.device]:
    """The GPUs torch has started in this process: where a timed call may have queued work."""
    devices = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append(torch.device("mps"))
    return devices


def benchmark(fn: Callable[[], object], warmup: int = 2, repeat: int = 10,
              device: str | torch.device | None = None) -> Timing:
    """Call fn() `warmup` times untimed, then `repeat` times timed, one by one.

    device: the device whose queued work each sample waits for; None waits for every
    accelerator torch has started (`started_accelerators`), so a GPU call is never timed
    by its launch alone."""
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    check_non_negative("warmup", warmup, integer=True)
    check_positive("repeat", repeat, integer=True)
    for _ in range(warmup):
        fn()
    devices = started_accelerators() if device is None else [device]  # fn may start one
    samples = []
    for _ in range(repeat):
        for dev in devices:
            synchronize(dev)
        start = time.perf_counter()
        fn()
        for dev in devices:
            synchronize(dev)
        samples.append(time.perf_counter() - start)
    q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    return Timing(statistics.median(samples), min(samples), q3 - q1, tuple(samples),
                  torch.get_num_threads())
