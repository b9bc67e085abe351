"""A small table that prints aligned in a terminal and renders as HTML in a notebook.

    Table(["model", "weights"], [("llama-2-7b", 13.5e9)], formats={"weights": format_bytes})

`str(table)` (and `repr`) is fixed-width plain text: a title line, the header, a
rule, the rows, and footer rows (totals) below a second rule. Numeric columns are
right-aligned. In Jupyter `_repr_html_` draws the same cells as an HTML table.
Both are deterministic, so a notebook's saved output can be compared on a rerun.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

Formatter = Callable[[Any], str] | str  # a function, or a format spec such as ".1f"
GAP = "  "  # between columns


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def format_cell(value: object, formatter: Formatter | None = None) -> str:
    """One cell as text: "" for None, the column's formatter if any, else a plain default
    (integers with thousands separators, other numbers with 4 significant digits)."""
    if value is None:
        return ""
    if callable(formatter):
        return formatter(value)
    if isinstance(formatter, str):
        return format(value, formatter)
    if isinstance(value, Integral) and not isinstance(value, bool):
        return f"{value:,}"
    if _is_number(value):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True, repr=False)
class Table:
    """Rows of cells under named columns, with an optional title and footer rows.

    formats: column name -> a function of the cell value returning text (e.g.
    `format_bytes`) or a format spec ("8.1f"); other cells use `format_cell`'s default.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str | None = None
    formats: Mapping[str, Formatter] = field(default_factory=dict)
    footer: Sequence[Sequence[Any]] = ()

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError(f"columns must be a non-empty sequence of names, got {self.columns!r}")
        object.__setattr__(self, "columns", columns)
        for name in ("rows", "footer"):
            rows = tuple(tuple(row) for row in getattr(self, name))
            for i, row in enumerate(rows):
                if len(row) != len(columns):
                    raise ValueError(f"{name}[{i}] has {len(row)} cells; the table has "
                                     f"{len(columns)} columns {list(columns)}")
            object.__setattr__(self, name, rows)
        unknown = sorted(set(self.formats) - set(columns))
        if unknown:
            raise ValueError(f"formats names columns {unknown} that are not in {list(columns)}")

    # ---- cells --------------------------------------------------------------------------
    def _numeric_columns(self) -> list[bool]:
        """A column is right-aligned when every value in it that is not None is a number."""
        every = self.rows + self.footer
        return [all(_is_number(row[i]) for row in every if row[i] is not None)
                for i in range(len(self.columns))]

    def _cells(self, rows: Sequence[Sequence[Any]]) -> list[list[str]]:
        return [[format_cell(value, self.formats.get(column))
                 for column, value in zip(self.columns, row)] for row in rows]

    # ---- plain text ---------------------------------------------------------------------------
    def to_text(self) -> str:
        """Fixed-width text: title, header, rule, rows, and the footer below a rule."""
        body, foot = self._cells(self.rows), self._cells(self.footer)
        widths = [max(len(cell) for cell in column)
                  for column in zip(self.columns, *body, *foot)]
        right = self._numeric_columns()

        def line(cells: Sequence[str]) -> str:
            return GAP.join(cell.rjust(w) if r else cell.ljust(w)
                            for cell, w, r in zip(cells, widths, right)).rstrip()

        rule = GAP.join("-" * w for w in widths)
        lines = [self.title] if self.title else []
        lines += [line(self.columns), rule, *(line(cells) for cells in body)]
        if foot:
            lines += [rule, *(line(cells) for cells in foot)]
        return "\n".join(lines)

    __str__ = to_text
    __repr__ = to_text

    # ---- HTML -------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        right = self._numeric_columns()

        def row_html(cells: Sequence[str], tag: str) -> str:
            return "<tr>" + "".join(
                f'<{tag} style="text-align:{"right" if r else "left"}">{html.escape(c)}</{tag}>'
                for c, r in zip(cells, right)) + "</tr>"

        parts = ["<table>"]
        if self.title:
            parts.append(f"<caption>{html.escape(self.title)}</caption>")
        parts.append("<thead>" + row_html(self.columns, "th") + "</thead>")
        parts.append("<tbody>" + "".join(row_html(c, "td") for c in self._cells(self.rows))
                     + "</tbody>")
        if self.footer:
            parts.append("<tfoot>" + "".join(row_html(c, "td") for c in self._cells(self.footer))
                         + "</tfoot>")
        parts.append("</table>")
        return "".join(parts)
