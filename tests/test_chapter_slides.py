"""Every chapter can be presented as slides (`make slides`, jupyterlab-myst-revealjs): its cells
carry the standard slideshow metadata.

The slides read `metadata.slideshow.slide_type` of each cell; jupytext keeps it in the percent
source's cell headers (`# %% [markdown] slideshow={"slide_type": "slide"}`). Each `##` section
starts a slide, and the cells folded away on the site (`hide-cell`, the worked problems' checks)
are skipped rather than shown.
"""
import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
SLIDE_TYPES = {"slide", "subslide", "fragment", "-", "skip", "notes"}
SECTION = re.compile(r"^## ", re.MULTILINE)


def slide_type(cell):
    return cell.metadata.get("slideshow", {}).get("slide_type")


def test_there_are_chapters():
    assert CHAPTERS


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_slide_metadata(py):
    nb = jupytext.read(py)
    missing = [i for i, c in enumerate(nb.cells) if slide_type(c) not in SLIDE_TYPES]
    assert not missing, \
        f"{py.name}: cells {missing} have no slide_type (one of {sorted(SLIDE_TYPES)})"
    assert slide_type(nb.cells[0]) == "slide", f"{py.name}: the title cell must open a slide"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.name)
def test_sections_are_slides(py):
    nb = jupytext.read(py)
    not_slides = [c.source.splitlines()[0] for c in nb.cells
                  if c.cell_type == "markdown" and SECTION.search(c.source)
                  and slide_type(c) != "slide"]
    assert not not_slides, \
        f"{py.name}: cells with a ## heading that do not start a slide: {not_slides}"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.name)
def test_hidden_cells_are_skipped(py):
    nb = jupytext.read(py)
    shown = [i for i, c in enumerate(nb.cells)
             if "hide-cell" in c.metadata.get("tags", []) and slide_type(c) != "skip"]
    assert not shown, f"{py.name}: hide-cell cells {shown} are shown in the slides (use \"skip\")"


def test_metadata_reaches_the_notebook(tmp_path):
    """jupytext writes the header's slideshow and tags into the ipynb cell metadata."""
    py = tmp_path / "nb.py"
    py.write_text('# %% [markdown] slideshow={"slide_type": "slide"}\n# ## A section\n\n'
                  '# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]\nassert True\n',
                  encoding="utf-8")
    nb = jupytext.read(py)
    assert [c.metadata for c in nb.cells] == [
        {"slideshow": {"slide_type": "slide"}},
        {"slideshow": {"slide_type": "skip"}, "tags": ["hide-cell"]},
    ]
