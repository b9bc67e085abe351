"""One plotting style for the whole book. matplotlib is imported only when plotting."""
from __future__ import annotations

from typing import TYPE_CHECKING

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
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def use_style() -> None:
    """Apply the book's style to matplotlib's defaults."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)


def new_axes(title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
             figsize: tuple[float, float] | None = None) -> "Axes":
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
