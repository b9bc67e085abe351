"""Build the book: execute every chapter into _build/ and render each to HTML.

The committed notebooks are not touched: each chapter's .py source is executed
afresh into _build/notebooks/, then rendered to _build/html/ with an index page
that links the chapters in order.
"""
from __future__ import annotations

import argparse
import html
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from notebooks import execute, read_source

ROOT = Path(__file__).resolve().parent.parent


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
<ol>
{items}
</ol>
</body></html>
""", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "_build")
    args = parser.parse_args()
    notebooks_dir, html_dir = args.output / "notebooks", args.output / "html"
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    entries = []
    for py in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py")):
        start = time.perf_counter()
        nb = execute(read_source(py), cwd=py.parent)
        seconds = time.perf_counter() - start
        nbformat.write(nb, notebooks_dir / f"{py.stem}.ipynb")
        body, _ = exporter.from_notebook_node(nb)
        (html_dir / f"{py.stem}.html").write_text(body, encoding="utf-8")
        entries.append((f"{py.stem}.html", chapter_title(nb, py.stem), seconds))
        print(f"{py.name}: {seconds:.1f} s")
    write_index(entries, html_dir / "index.html")
    print(f"wrote {html_dir / 'index.html'} linking {len(entries)} chapters")


if __name__ == "__main__":
    main()
