"""The roofline model: an operator takes max(FLOPs / peak, bytes / bandwidth).

Attainable FLOP/s at arithmetic intensity I is min(peak, I * bandwidth): below the
ridge point (peak / bandwidth) memory bandwidth limits it, above it compute does.

The time it gives is an optimistic estimate, not a bound. Optimistic, because it
assumes the operator reaches the dense peak or the full datasheet bandwidth, with
no launch latency, no start-up of the pipeline and no imperfect overlap; measured
times are nearly always longer. Not a bound, because the bytes are a count made
under an assumption (each operand crosses to off-chip memory once, as `llmperf.analytic.cost`
states): an on-chip cache that serves a re-read, or a fused kernel that never
writes an intermediate, moves fewer bytes than were charged.
"""
from __future__ import annotations

from ..hardware import Accelerator, get_accelerator
from ..units import check_non_negative
from .cost import Cost

COMPUTE = "compute"
MEMORY = "memory"


def attainable_flops(intensity: float, accelerator: Accelerator | str,
                     dtype: str = "fp16") -> float:
    """FLOP/s reachable at `intensity` FLOP/byte: min(peak, intensity * bandwidth)."""
    acc = get_accelerator(accelerator)
    check_non_negative("intensity", intensity)
    return min(acc.peak(dtype), intensity * acc.mem_bandwidth)


def compute_time(cost: Cost, accelerator: Accelerator | str, dtype: str = "fp16") -> float:
    """Seconds to do cost.flops at the dense peak."""
    return cost.flops / get_accelerator(accelerator).peak(dtype)


def memory_time(cost: Cost, accelerator: Accelerator | str) -> float:
    """Seconds to move cost.bytes at the memory bandwidth."""
    return cost.bytes / get_accelerator(accelerator).mem_bandwidth


def roofline_time(cost: Cost, accelerator: Accelerator | str, dtype: str = "fp16") -> float:
    """Roofline seconds: the larger of compute time and memory time.

    An optimistic estimate under the module's assumptions, not a lower bound.
    """
    return max(compute_time(cost, accelerator, dtype), memory_time(cost, accelerator))


def bound(cost: Cost, accelerator: Accelerator | str, dtype: str = "fp16") -> str:
    """'compute' if the FLOPs take longer than the bytes on this part, else 'memory'."""
    compute_s = compute_time(cost, accelerator, dtype)
    return COMPUTE if compute_s > memory_time(cost, accelerator) else MEMORY
