"""Build the book: execute every chapter into _build/ and render each to HTML.

The committed notebooks are not touched: each chapter's .py source is executed
afresh into _build/notebooks/, then rendered to _build/html/ with an index page
that links the chapters in order. MathJax is copied next to the pages, so the
mathematics renders without a network connection.
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import time
from pathlib import Path

import jupyter_server_mathjax

import nbformat
from nbconvert import HTMLExporter

from notebooks import execute, read_source

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # the config this copy ships


def chapter_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def write_index(entries: list[tuple[str, str, float]], out: Path) -> None:
    items = "\n".join(
        f'    <li><a href="{html.escape(href)}">{html.escape(title)}</a> '
        f'<small>(executed in {seconds:.0f} s)</small></li>'
        for href, title, seconds in entries)
    out.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Performance of Transformers: a runnable textbook</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;line-height:1.5}}</style>
</head><body>
<h1>Performance of Transformers</h1>
<p>A runnable textbook on where the time goes when a transformer LLM serves a request.
Every page was executed on the machine that built this book.</p>
<ol start="0">
{items}
</ol>
</body></html>
""", encoding="utf-8")


def with_navigation(body: str, title: str, prev: str | None, nxt: str | None) -> str:
    """Give a rendered chapter its title and links to the index and its neighbours."""
    links = ['<a href="index.html">contents</a>']
    if prev:
        links.insert(0, f'<a href="{prev}">&larr; previous</a>')
    if nxt:
        links.append(f'<a href="{nxt}">next &rarr;</a>')
    nav = ('<nav style="font-family:system-ui,sans-serif;padding:0.5rem 1rem">'
           + " &middot; ".join(links) + "</nav>")
    body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", body, count=1, flags=re.S)
    body = re.sub(r"(<body[^>]*>)", r"\1" + nav, body, count=1)
    return body.replace("</body>", nav + "</body>", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "_build")
    args = parser.parse_args()
    notebooks_dir, html_dir = args.output / "notebooks", args.output / "html"
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(MATHJAX, html_dir / "mathjax", dirs_exist_ok=True)
    exporter = HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL)
    sources = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
    pages = [f"{py.stem}.html" for py in sources]
    entries = []
    for i, py in enumerate(sources):
        start = time.perf_counter()
        nb = execute(read_source(py), cwd=py.parent)
        seconds = time.perf_counter() - start
        nbformat.write(nb, notebooks_dir / f"{py.stem}.ipynb")
        title = chapter_title(nb, py.stem)
        body, _ = exporter.from_notebook_node(nb)
        body = with_navigation(body, title, pages[i - 1] if i else None,
                               pages[i + 1] if i + 1 < len(pages) else None)
        (html_dir / pages[i]).write_text(body, encoding="utf-8")
        entries.append((pages[i], title, seconds))
        print(f"{py.name}: {seconds:.1f} s")
    write_index(entries, html_dir / "index.html")
    print(f"wrote {html_dir / 'index.html'} linking {len(entries)} chapters")


if __name__ == "__main__":
    main()
