"""The book's own Sphinx extension: a site that works offline and offers each chapter's .py.

- MathJax 3 comes from the `mathjax` Python package (django-static-mathjax), copied into
  _static/mathjax/ with its TeX fonts and extensions, so no page fetches it from a CDN.
- A chapter built from NN_topic.ipynb whose jupytext source NN_topic.py sits beside it gets a
  ".py" entry in the download menu, next to the theme's ".ipynb" one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import mathjax
from sphinx.application import Sphinx

MATHJAX_ES5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
MATHJAX_BUNDLE = "tex-chtml.js"
# The combined component files other than the one the pages load are not needed.
_UNUSED = {p.name for p in MATHJAX_ES5.glob("*.js")} - {MATHJAX_BUNDLE}


def _copy_mathjax(outdir: Path) -> None:
    target = outdir / "_static" / "mathjax"
    shutil.copytree(MATHJAX_ES5, target, dirs_exist_ok=True,
                    ignore=lambda folder, names: _UNUSED if Path(folder) == MATHJAX_ES5 else set())
    licence = MATHJAX_ES5.parent / "LICENSE"
    if licence.exists():
        shutil.copy2(licence, target / "LICENSE")


def _py_twin(app: Sphinx, docname: str) -> Path | None:
    source = Path(app.env.doc2path(docname))
    twin = source.with_suffix(".py")
    return twin if source.suffix == ".ipynb" and twin.exists() else None


def add_py_download(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Offer the jupytext .py source in the theme's download menu."""
    if doctree is None or _py_twin(app, pagename) is None:
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].insert(1, {
                "type": "link",
                "url": f"{context['pathto']('_sources', 1)}/{pagename}.py",
                "text": ".py",
                "tooltip": "Download the jupytext source (.py)",
                "icon": "fas fa-file-code",
                "label": "download-py-button",
            })


def finish(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    _copy_mathjax(outdir)
    for docname in app.env.found_docs:
        twin = _py_twin(app, docname)
        if twin is not None:
            dest = outdir / "_sources" / f"{docname}.py"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(twin, dest)


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", add_py_download, priority=600)
    app.connect("build-finished", finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
