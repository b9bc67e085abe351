"""Each .py notebook and its .ipynb pair hold the same cells.

File times are not trusted: the .ipynb inputs are regenerated from the .py and
compared cell by cell, so an edit to one half without the other fails here.
"""
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAIRED = sorted(p for folder in ("chapters", "exercises") for p in (ROOT / folder).glob("[0-9][0-9]_*.py"))


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_paired_notebooks():
    assert any(p.parent.name == "chapters" for p in PAIRED)


@pytest.mark.parametrize("py", PAIRED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ipynb_inputs_match_py_source(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make execute`"
    regenerated = jupytext.read(py)
    committed = nbformat.read(ipynb, as_version=4)
    expected, actual = cells(regenerated), cells(committed)
    assert len(actual) == len(expected), f"{ipynb.name}: {len(actual)} cells, source has {len(expected)}"
    for i, (want, got) in enumerate(zip(expected, actual)):
        assert got == want, f"{ipynb.name} cell {i} differs from {py.name}: run `make execute`"


@pytest.mark.parametrize("py", [p for p in PAIRED if p.parent.name == "chapters"], ids=lambda p: p.name)
def test_chapters_are_executed(py):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{py.name}: not executed"
