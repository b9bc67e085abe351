"""Goodput: the highest request rate at which enough requests meet both latency SLOs.

DistServe's metric (Zhong et al., "DistServe: Disaggregating Prefill and Decoding for
Goodput-optimized Large Language Model Serving", OSDI 2024): the maximum rate served while
the share of requests meeting their TTFT and TPOT limits stays at the attainment goal;
divided by the GPUs it takes, goodput per GPU compares layouts of different sizes.

`max_goodput` finds that rate for any serving run (one instance, a cluster, a
disaggregated pair of pools): `run_at(rate)` serves the workload at that rate and returns
a result with `slo_attainment(ttft_s, tpot_s)`. `llmperf.serving.cluster.cluster_goodput`
and `llmperf.serving.disaggregated.disaggregated_goodput` apply it per GPU. (The module is
not called `goodput`: that name is `llmperf.serving.goodput`, the single-instance function.)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..units import check_positive


def check_goodput_args(ttft_s: float, tpot_s: float, attainment: float,
                       max_rate_per_s: float, tolerance_per_s: float) -> None:
    """ValueError naming the first argument out of range (attainment must be in (0, 1])."""
    check_positive("ttft_s", ttft_s)
    check_positive("tpot_s", tpot_s)
    check_positive("attainment", attainment)
    if attainment > 1:
        raise ValueError(f"attainment must be in (0, 1], got {attainment!r}")
    check_positive("max_rate_per_s", max_rate_per_s)
    check_positive("tolerance_per_s", tolerance_per_s)


def highest_rate(meets: Callable[[float], bool], max_rate_per_s: float,
                 tolerance_per_s: float) -> float:
    """Bisection on [0, max_rate_per_s] to `tolerance_per_s` for the highest rate where
    `meets(rate)`, assuming it holds below some rate and fails above (true on average; a
    finite sample can wobble, so the answer is a rate that meets next to one that does
    not). 0.0 if no rate down to the tolerance meets; ValueError if max_rate_per_s already
    does (raise it)."""
    if meets(max_rate_per_s):
        raise ValueError(f"max_rate_per_s={max_rate_per_s} already meets the goal: raise it")
    low, high = 0.0, max_rate_per_s
    while high - low > tolerance_per_s:
        mid = (low + high) / 2
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low


def max_goodput(run_at: Callable[[float], Any], ttft_s: float, tpot_s: float,
                attainment: float = 0.9, max_rate_per_s: float = 100.0,
                tolerance_per_s: float = 0.01) -> float:
    """The highest rate (requests per second) at which `run_at(rate)` has at least
    `attainment` of its requests within both `ttft_s` and `tpot_s` (`highest_rate`)."""
    check_goodput_args(ttft_s, tpot_s, attainment, max_rate_per_s, tolerance_per_s)
    return highest_rate(lambda rate: run_at(rate).slo_attainment(ttft_s, tpot_s) >= attainment,
                        max_rate_per_s, tolerance_per_s)
