"""Columns of numbers right-aligned in the site's Markdown tables.

A Markdown table aligns a column to the right only when its author writes `---:`; the tables
that benchmarks write and many in the chapters do not. This transform finds the columns whose
body cells are all numbers (a number with an optional unit, "1.91x", "600 GB/s", "12 %", or
empty or a dash) and gives their cells, heading included, the class `text-right` that MyST
itself gives to `---:`. A column the author aligned keeps the author's alignment.

Cell outputs are HTML, not docutils tables: `lp.Table` aligns each cell with an inline style
(numbers right, text left), but takes a column of preformatted strings ("0.287", "1.6x",
"+23%") for text. The same rule is applied to the tables of HTML outputs: a column whose body
cells are all numbers gets `text-align:right` in each of its cells.
"""
from __future__ import annotations

import html
import re

from docutils import nodes
from sphinx.application import Sphinx

ALIGNED = {"text-left", "text-right", "text-center"}
NUMBER = r"[-+−~≈<>≤≥]?\s?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?"
UNIT = r"(?:\s?(?:%|x|×|[A-Za-zµ]{1,6}(?:/[A-Za-z]{1,6})?))?"
NUMERIC = re.compile(rf"{NUMBER}{UNIT}(?:\s?\[[^\]]*\])?(?:\s?\([^)]*\))?")
NEUTRAL = {"", "-", "–", "—", "n/a", "…", "?"}


def is_number(text: str) -> bool:
    return NUMERIC.fullmatch(text.strip()) is not None


def _rows(part: nodes.Element) -> list[list[nodes.entry]]:
    return [[e for e in row.children if isinstance(e, nodes.entry)]
            for row in part.children if isinstance(row, nodes.row)]


def align_numbers(app: Sphinx, doctree: nodes.document) -> None:
    for tgroup in doctree.findall(nodes.tgroup):
        head = [r for part in tgroup.children if isinstance(part, nodes.thead) for r in _rows(part)]
        body = [r for part in tgroup.children if isinstance(part, nodes.tbody) for r in _rows(part)]
        rows = head + body
        if not body or any(e.get("morecols") or e.get("morerows") for r in rows for e in r):
            continue  # spanning cells: the columns are not simple to tell apart
        width = max(len(r) for r in rows)
        for col in range(width):
            cells = [r[col].astext().strip() for r in body if col < len(r)]
            filled = [c for c in cells if c.lower() not in NEUTRAL]
            if not filled or not all(is_number(c) for c in filled):
                continue
            for row in rows:
                if col < len(row) and not ALIGNED & set(row[col]["classes"]):
                    row[col]["classes"].append("text-right")


_TABLE = re.compile(r"<table\b.*?</table>", re.S | re.I)
_ROW = re.compile(r"<tr\b[^>]*>(.*?)</tr>", re.S | re.I)
_CELL = re.compile(r"<(td|th)\b([^>]*)>(.*?)</\1>", re.S | re.I)
_ALIGN = re.compile(r"text-align\s*:\s*[a-z-]+;?", re.I)


def _cell_text(inner: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()


def _right_aligned(match: re.Match) -> str:
    tag, attrs, inner = match.groups()
    style = re.search(r'style="([^"]*)"', attrs)
    if style:
        rest = _ALIGN.sub("", style.group(1)).strip()
        new = f'style="{rest + ";" if rest and not rest.endswith(";") else rest}text-align:right"'
        attrs = attrs[:style.start()] + new + attrs[style.end():]
    else:
        attrs += ' style="text-align:right"'
    return f"<{tag}{attrs}>{inner}</{tag}>"


def align_html_table(table: str) -> str:
    """The table with its columns of numbers right-aligned."""
    if re.search(r"\b(?:col|row)span\s*=", table, re.I):
        return table
    tbody = re.search(r"<tbody\b[^>]*>(.*?)</tbody>", table, re.S | re.I)
    # The body decides; a footer ("published", "about 8x") follows its columns' alignment.
    body_part = tbody.group(1) if tbody else re.split(r"</thead>", table, flags=re.I)[-1]
    body = [[_cell_text(c[2]) for c in _CELL.findall(row)] for row in _ROW.findall(body_part)]
    width = max((len(r) for r in body), default=0)
    numeric = set()
    for col in range(width):
        filled = [r[col] for r in body if col < len(r) and r[col].lower() not in NEUTRAL]
        if filled and all(is_number(c) for c in filled):
            numeric.add(col)
    if not numeric:
        return table

    def row(match: re.Match) -> str:
        cells = iter(range(10**6))
        inner = _CELL.sub(lambda c: _right_aligned(c) if next(cells) in numeric else c.group(0),
                          match.group(1))
        return match.group(0).replace(match.group(1), inner, 1)

    return _ROW.sub(row, table)


def align_output_numbers(app: Sphinx, doctree: nodes.document) -> None:
    for raw in list(doctree.findall(nodes.raw)):
        if "html" in raw.get("format", "").split() and "<table" in raw.astext():
            text = _TABLE.sub(lambda m: align_html_table(m.group(0)), raw.astext())
            if text != raw.astext():
                raw.clear()
                raw += nodes.Text(text)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", align_numbers)
    app.connect("doctree-read", align_output_numbers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
