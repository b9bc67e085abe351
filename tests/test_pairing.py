"""Each .py notebook and its .ipynb pair hold the same cells.

File times are not trusted: the .ipynb inputs are regenerated from the .py and
compared cell by cell, sources and tags (nbval's `nbval-ignore-output`, the site's
`hide-cell`), so an edit to one half without the other fails here.
"""
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAIRED = sorted(p for folder in ("chapters", "exercises")
                for p in (ROOT / folder).glob("[0-9][0-9]_*.py"))
CHAPTERS = [p for p in PAIRED if p.parent.name == "chapters"]


def cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_tags_are_compared(tmp_path):
    py = tmp_path / "nb.py"
    py.write_text('# %% tags=["nbval-ignore-output"]\nx = 1\n', encoding="utf-8")
    tagged = jupytext.read(py)
    assert cells(tagged) == [("code", "x = 1", ["nbval-ignore-output"])]
    untagged = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert cells(untagged) != cells(tagged)


def test_no_nbval_comments_in_code():
    """Machine-dependent cells carry nbval's tag; readers copy the code without a marker."""
    marked = [f"{p.parent.name}/{p.name}" for p in PAIRED
              if "NBVAL_IGNORE_OUTPUT" in p.read_text(encoding="utf-8")]
    assert not marked, f"use `# %% tags=[\"nbval-ignore-output\"]` instead of a comment: {marked}"


def test_there_are_paired_notebooks():
    assert any(p.parent.name == "chapters" for p in PAIRED)


@pytest.mark.parametrize("py", PAIRED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ipynb_inputs_match_py_source(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make execute`"
    regenerated = jupytext.read(py)
    committed = nbformat.read(ipynb, as_version=4)
    expected, actual = cells(regenerated), cells(committed)
    assert len(actual) == len(expected), \
        f"{ipynb.name}: {len(actual)} cells, source has {len(expected)}"
    for i, (want, got) in enumerate(zip(expected, actual)):
        assert got == want, f"{ipynb.name} cell {i} differs from {py.name}: run `make execute`"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_executed(py):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{py.name}: not executed"
