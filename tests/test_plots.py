"""The book's figures: the roofline and the dependency graph, drawn off screen."""

import subprocess
import sys

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import llmperf as lp  # noqa: E402
from llmperf.plots import critical_path, plot_dependency_graph, plot_roofline  # noqa: E402


def test_package_level_plot_roofline_is_the_plots_one_and_loads_lazily():
    assert lp.plot_roofline is plot_roofline
    code = "import sys, llmperf; llmperf.plot_roofline; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # reaching the function does not draw, nor import


def test_roofline_points_sit_on_the_roof():
    ax = plot_roofline("A10", points=[("GEMV", 1.0), ("GEMM", 1365.3)])
    roof = ax.lines[0]
    assert max(roof.get_ydata()) == pytest.approx(125e12)
    dots = [line for line in ax.lines[1:] if line.get_marker() == "o"]
    assert [d.get_ydata()[0] for d in dots] == pytest.approx([600e9, 125e12])
    with pytest.raises(ValueError, match="intensity_range"):
        plot_roofline("A10", intensity_range=(10, 1))


@pytest.mark.parametrize("decode, length", [(False, 4), (True, 20)])
def test_dependency_graph_titles_its_critical_path(decode, length):
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    plot_dependency_graph(ax, tokens=5, layers=4, decode=decode, title="t")
    assert ax.get_title() == f"t: critical path {length} layer evaluations"
    shaded = [line for line in ax.lines if line.get_color() == "#f4b6b6"]
    assert len(shaded) == length
    plt.close("all")


def test_critical_path_is_a_chain():
    path = critical_path(3, 2, decode=True)
    assert path == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert critical_path(3, 2, decode=False) == [(2, 0), (2, 1)]
    with pytest.raises(ValueError, match="tokens"):
        critical_path(0, 2, decode=True)


def test_legend_below_moves_the_axes_legend_to_the_figure():
    import matplotlib

    matplotlib.use("Agg")
    from llmperf.plots import legend_below, new_axes

    ax = new_axes()
    ax.plot([1, 2], [1, 2], label="measured")
    ax.plot([1, 2], [2, 3], label="predicted")
    ax.legend()
    legend_below(ax, ncol=2)
    assert ax.get_legend() is None
    (figure_legend,) = ax.figure.legends
    assert [t.get_text() for t in figure_legend.get_texts()] == ["measured", "predicted"]
