"""Naming a submission's cells the way a student finds them: by question, else by position.

A notebook counts all its cells, markdown included; a student sees questions and
code. The answer cell of a question is the code cell just above its check cell
(released notebooks) or its `question(...)` cell (instructor sources); its number
comes from the nearest "Question N" heading above it, else from its order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .notebook import first_line, is_check_cell

_HEADING = re.compile(r"Question\s+(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Place:
    """Where question `name` lives in one notebook."""

    name: str
    number: int
    answer_cell: int | None  # index in the notebook's cells; None when no cell defines it

    @property
    def label(self) -> str:
        return f"the answer cell of Question {self.number} ({self.name})"


def _cells(nb: Any) -> list[tuple[str, str]]:
    cells = nb.get("cells") if hasattr(nb, "get") else None
    out = []
    for cell in cells if isinstance(cells, list) else []:
        source = cell.get("source", "") if isinstance(cell, dict) else ""
        source = "".join(source) if isinstance(source, list) else str(source)
        out.append((cell.get("cell_type", "") if isinstance(cell, dict) else "", source))
    return out


def _declares(source: str, name: str) -> bool:
    return re.search(rf"""\b(check|question)\(\s*['"]{re.escape(name)}['"]""", source) is not None


def _defines(source: str, name: str) -> bool:
    pattern = rf"^(def\s+{re.escape(name)}\s*\(|{re.escape(name)}\s*(:[^=]*)?=[^=])"
    return re.search(pattern, source, re.MULTILINE) is not None


def _answer_cell(cells: list[tuple[str, str]], name: str) -> int | None:
    code = [i for i, (kind, _) in enumerate(cells) if kind == "code"]
    for i in code:
        if _declares(cells[i][1], name):
            above = [j for j in code if j < i and not _is_declaration(cells[j][1])]
            return above[-1] if above else None
    defining = [i for i in code if _defines(cells[i][1], name)]
    return defining[-1] if defining else None


def _is_declaration(source: str) -> bool:
    return is_check_cell(source) or re.search(r"^question\(", source, re.MULTILINE) is not None


def _number(cells: list[tuple[str, str]], index: int | None, order: int) -> int:
    for j in range(index if index is not None else -1, -1, -1):
        kind, source = cells[j]
        match = _HEADING.search(source) if kind == "markdown" else None
        if match:
            return int(match.group(1))
    return order


def question_places(nb: Any, names: list[str]) -> dict[str, Place]:
    """The place of each question, by name (`names` in the exercise's order)."""
    cells = _cells(nb)
    places = {}
    for order, name in enumerate(names, start=1):
        index = _answer_cell(cells, name)
        places[name] = Place(name, _number(cells, index, order), index)
    return places


def cell_label(nb: Any, index: int, places: dict[str, Place]) -> str:
    """How to point a student at cell `index`: by its question, else by code cell count."""
    for place in places.values():
        if place.answer_cell == index:
            return place.label
    cells = _cells(nb)
    source = cells[index][1] if index < len(cells) else ""
    count = sum(kind == "code" for kind, _ in cells[: index + 1])
    return f"code cell {count} from the top, counting code cells only (`{first_line(source)}`)"
