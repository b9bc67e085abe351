"""The roofline model: an operator takes at least max(FLOPs / peak, bytes / bandwidth).

Attainable FLOP/s at arithmetic intensity I is min(peak, I * bandwidth): below the
ridge point (peak / bandwidth) memory bandwidth limits it, above it compute does.
The model ignores latency, caches and overlap, so it is a lower bound on time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from .cost import Cost
from .hardware import Accelerator, get_accelerator
from .units import check_non_negative

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.axes import Axes

COMPUTE = "compute"
MEMORY = "memory"


def attainable_flops(intensity: float, accelerator: Accelerator | str, dtype: str = "fp16") -> float:
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
    """Lower bound on seconds: the larger of compute time and memory time."""
    return max(compute_time(cost, accelerator, dtype), memory_time(cost, accelerator))


def bound(cost: Cost, accelerator: Accelerator | str, dtype: str = "fp16") -> str:
    """'compute' if the FLOPs take longer than the bytes on this part, else 'memory'."""
    compute_s = compute_time(cost, accelerator, dtype)
    return COMPUTE if compute_s > memory_time(cost, accelerator) else MEMORY


def plot_roofline(accelerator: Accelerator | str, points: Iterable[tuple[str, float]] = (),
                  dtype: str = "fp16", ax: "Axes | None" = None,
                  measured: Sequence[tuple[str, float, float]] = (),
                  intensity_range: tuple[float, float] = (0.1, 1e4),
                  annotate_ridge: bool = True) -> "Axes":
    """Draw `accelerator`'s roofline on log-log axes.

    points: (label, intensity) pairs, drawn on the roof (their attainable FLOP/s).
    measured: (label, intensity, achieved FLOP/s) triples, drawn as hollow markers.
    annotate_ridge: write the ridge point beside its line (else it goes in the legend),
    which keeps several parts on one axes readable.
    """
    import numpy as np
    from .plots import new_axes

    acc = get_accelerator(accelerator)
    ax = ax if ax is not None else new_axes()
    lo, hi = intensity_range
    xs = np.logspace(np.log10(lo), np.log10(hi), 256)
    ys = np.minimum(acc.peak(dtype), xs * acc.mem_bandwidth)
    ridge = acc.ridge_point(dtype)
    label = f"{acc.name} ({dtype})" if annotate_ridge else f"{acc.name} ({dtype}, ridge {ridge:.1f})"
    line, = ax.plot(xs, ys, label=label)
    ax.axvline(ridge, color=line.get_color(), linestyle=":", linewidth=1)
    if annotate_ridge:
        ax.annotate(f"ridge {ridge:.0f}", (ridge, acc.peak(dtype)), textcoords="offset points",
                    xytext=(4, -14), fontsize=8, color=line.get_color())
    for label, intensity in points:
        y = attainable_flops(intensity, acc, dtype)
        ax.plot([intensity], [y], "o", color=line.get_color())
        ax.annotate(label, (intensity, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for label, intensity, achieved in measured:
        ax.plot([intensity], [achieved], "s", mfc="none", color=line.get_color())
        ax.annotate(label, (intensity, achieved), textcoords="offset points", xytext=(5, -12),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.legend(loc="lower right")
    return ax
