"""One plotting style for the whole book, and the book's recurring figures.

matplotlib is imported inside the functions, only when something is drawn, so
importing this module stays as light as `import llmperf`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .analytic.roofline import attainable_flops
from .hardware import Accelerator, get_accelerator
from .units import check_positive

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STYLE = {
    "figure.figsize": (7.0, 4.2),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.fontsize": 10,  # as large as the axis labels: read at page width
    "legend.frameon": False,
}


def use_style() -> None:
    """Apply the book's style to matplotlib's defaults."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)


def legend_below(ax: Axes, ncol: int = 2) -> None:
    """Move the legend of `ax` under the figure's plots, where no data point can land.

    A legend drawn inside the axes (as `plot_roofline` draws one) is removed first; the
    figure switches to the constrained layout so that the legend gets room of its own."""
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.figure.set_layout_engine("constrained")
    ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol,
                     fontsize="medium")


def new_axes(title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
             figsize: tuple[float, float] | None = None) -> Axes:
    """A fresh figure in the book's style, with one axes, labelled."""
    import matplotlib.pyplot as plt

    use_style()
    _, ax = plt.subplots(figsize=figsize or STYLE["figure.figsize"])
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax


def plot_roofline(accelerator: Accelerator | str, points: Iterable[tuple[str, float]] = (),
                  dtype: str = "fp16", ax: Axes | None = None,
                  measured: Sequence[tuple[str, float, float]] = (),
                  intensity_range: tuple[float, float] = (0.1, 1e4),
                  annotate_ridge: bool = True) -> Axes:
    """Draw `accelerator`'s roofline, min(peak, intensity x bandwidth), on log-log axes.

    points: (label, intensity) pairs, drawn on the roof (their attainable FLOP/s).
    measured: (label, intensity, achieved FLOP/s) triples, drawn as hollow markers.
    annotate_ridge: write the ridge point beside its line (else it goes in the legend),
    which keeps several parts on one axes readable.
    """
    import numpy as np

    acc = get_accelerator(accelerator)
    lo, hi = intensity_range
    check_positive("intensity_range[0]", lo)
    check_positive("intensity_range[1]", hi)
    if lo >= hi:
        raise ValueError("intensity_range must be (low, high) with low < high, "
                         f"got {intensity_range}")
    ax = ax if ax is not None else new_axes()
    xs = np.logspace(np.log10(lo), np.log10(hi), 256)
    ys = [attainable_flops(x, acc, dtype) for x in xs]
    ridge = acc.ridge_point(dtype)
    label = f"{acc.name} ({dtype})"
    if not annotate_ridge:
        label = f"{acc.name} ({dtype}, ridge {ridge:.1f})"
    line, = ax.plot(xs, ys, label=label)
    ax.axvline(ridge, color=line.get_color(), linestyle=":", linewidth=1)
    if annotate_ridge:
        ax.annotate(f"ridge {ridge:.0f}", (ridge, acc.peak(dtype)), textcoords="offset points",
                    xytext=(4, -14), fontsize=8, color=line.get_color())
    for name, intensity in points:
        y = attainable_flops(intensity, acc, dtype)
        ax.plot([intensity], [y], "o", color=line.get_color())
        ax.annotate(name, (intensity, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for name, intensity, achieved in measured:
        ax.plot([intensity], [achieved], "s", mfc="none", color=line.get_color())
        ax.annotate(name, (intensity, achieved), textcoords="offset points", xytext=(5, -12),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.legend(loc="lower right")
    return ax


CRITICAL_NODE_COLOR = "#f4b6b6"


def critical_path(tokens: int, layers: int, decode: bool) -> list[tuple[int, int]]:
    """The longest chain of (token, layer) nodes that must run one after another.

    Decode: every node, token after token (the sampled token feeds the next step).
    Prefill: one column, layer after layer (here the last token's).
    """
    check_positive("tokens", tokens, integer=True)
    check_positive("layers", layers, integer=True)
    if decode:
        return [(t, layer) for t in range(tokens) for layer in range(layers)]
    return [(tokens - 1, layer) for layer in range(layers)]


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], color: str = "black",
           lw: float = 0.8, alpha: float = 1.0, rad: float = 0.0) -> None:
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color=color, lw=lw, alpha=alpha,
                                                connectionstyle=f"arc3,rad={rad}"))


def plot_dependency_graph(ax: Axes, tokens: int, layers: int, decode: bool, title: str) -> Axes:
    """Draw the dependency graph of `tokens` tokens through `layers` layers on `ax`.

    Node (t, l) is layer l of token t. Black arrows: the same token's next layer.
    Blue arrows: the keys and values of earlier tokens at layer l, computed from their
    layer l-1 outputs and read by attention. Red arrows (decode only): the token
    sampled from the last layer is the next step's input. The critical path
    (`critical_path`) is shaded and its arrows drawn red; the title gives its length.
    """
    path = critical_path(tokens, layers, decode)
    on_path, edges = set(path), set(zip(path, path[1:]))
    for t in range(tokens):
        for layer in range(layers):
            ax.plot(t, layer, "o", ms=14, mec="black", zorder=3,
                    color=CRITICAL_NODE_COLOR if (t, layer) in on_path else "white")
            if layer == 0:
                continue
            red = ((t, layer - 1), (t, layer)) in edges
            _arrow(ax, (t, layer - 1 + 0.2), (t, layer - 0.2), "C3" if red else "black",
                   1.8 if red else 0.8)
            for s in range(t):  # K, V of earlier tokens, made from their previous layer's output
                _arrow(ax, (s + 0.12, layer - 1 + 0.12), (t - 0.12, layer - 0.12), "C0", 0.5, 0.35)
        if decode and t + 1 < tokens:
            _arrow(ax, (t + 0.1, layers - 1 - 0.15), (t + 1 - 0.1, 0.15), "C3", 1.8, rad=-0.2)
    ax.set_title(f"{title}: critical path {len(path)} layer evaluations")
    ax.set_xticks(range(tokens))
    ax.set_yticks(range(layers), [f"layer {layer + 1}" for layer in range(layers)])
    ax.set_xlabel("token position")
    ax.set_xlim(-0.5, tokens - 0.5)
    ax.set_ylim(-0.5, layers - 0.5)
    ax.grid(False)
    return ax
