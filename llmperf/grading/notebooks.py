"""Notebooks: reading them, their solution markers, loading an instructor source, naming cells.

Exercise notebooks are .ipynb files or .py files in jupytext's percent format.
The instructor's notebook is trusted: `load_exercise` runs it in this process and
returns each question's checks with the expected answers, all as plain data, so
that a submission never sees or computes them.

The submission's process imports this module for `runnable`: nbformat and jupytext
are imported inside the functions that need them, so that it starts fast.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .questions import Collector, ExerciseError, GradedQuestion, resolve

METADATA_KEY = "llmperf"  # notebook metadata: {"llmperf": {"exercise": "04_boundedness", ...}}
SUFFIXES = (".ipynb", ".py")
CHECK_MARK = "# Check your answer"  # first line of the check cells that release writes
_MAGIC = re.compile(r"^(\s*)([%!].*)$")


# ---- reading ------------------------------------------------------------------------------------
class NotebookError(ValueError):
    """A file that cannot be read as a notebook."""


def read_notebook(path: Path) -> Any:
    """The notebook in `path`; NotebookError with a readable reason if it is not one."""
    import nbformat

    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise NotebookError(f"{path.name}: expected a .ipynb or .py notebook")
    try:
        if path.suffix == ".py":
            import jupytext  # imported here: only .py files need it

            return jupytext.read(path, fmt="py:percent")
        return nbformat.read(path, as_version=4)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError,
            nbformat.ValidationError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise NotebookError(f"{path.name} cannot be read as a notebook: {err}") from err


def exercise_name(nb: Any) -> str | None:
    """The exercise a released notebook belongs to, from its metadata."""
    meta = nb.get("metadata", {}).get(METADATA_KEY)
    name = meta.get("exercise") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def code_cells(nb: Any) -> list[tuple[int, str]]:
    """(index in the notebook, source) of each code cell, in order."""
    return [(i, source) for i, (kind, source) in enumerate(cells_of(nb)) if kind == "code"]


def cells_of(nb: Any) -> list[tuple[str, str]]:
    """(cell type, source) of every cell, whatever shape a damaged notebook gives them."""
    cells = nb.get("cells") if hasattr(nb, "get") else None
    out = []
    for cell in cells if isinstance(cells, list) else []:
        cell = cell if isinstance(cell, dict) else {}
        source = cell.get("source", "")
        source = "".join(str(s) for s in source) if isinstance(source, list) else source
        out.append((cell.get("cell_type", ""), source if isinstance(source, str) else ""))
    return out


def runnable(source: str) -> str:
    """The cell as plain Python: IPython magics and shell escapes are commented out."""
    return "\n".join(_MAGIC.sub(r"\1# \2", line) for line in source.splitlines())


def first_line(source: str, width: int = 50) -> str:
    """The first non-blank line of a cell, to name it in messages."""
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[: width - 3] + "..."
    return "(empty)"


def is_check_cell(source: str) -> bool:
    return source.lstrip().startswith(CHECK_MARK)


# ---- solution markers: `### BEGIN SOLUTION` ... `### END SOLUTION` (nbgrader's spelling) --------
BEGIN = re.compile(r"^(\s*)(#\s*)?###\s*BEGIN SOLUTION\b")
END = re.compile(r"^\s*(#\s*)?###\s*END SOLUTION\b")
CODE_STUB = 'raise NotImplementedError("replace this line with your solution")'
TEXT_STUB = "YOUR ANSWER HERE"


class MarkerError(ValueError):
    """Unbalanced or nested solution markers."""


def split_solutions(source: str) -> list[tuple[bool, list[str]]]:
    """The cell's lines in runs: (True, lines) inside a solution, (False, lines) outside.

    The marker lines themselves belong to the solution runs.
    """
    runs: list[tuple[bool, list[str]]] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        if BEGIN.match(line):
            if inside:
                raise MarkerError(f"line {number}: BEGIN SOLUTION inside a solution")
            inside = True
            runs.append((True, [line]))
        elif END.match(line):
            if not inside:
                raise MarkerError(f"line {number}: END SOLUTION without BEGIN SOLUTION")
            runs[-1][1].append(line)
            inside = False
        elif runs and runs[-1][0] == inside:
            runs[-1][1].append(line)
        else:
            runs.append((inside, [line]))
    if inside:
        raise MarkerError("BEGIN SOLUTION without END SOLUTION")
    return runs


def has_solution(source: str) -> bool:
    return any(BEGIN.match(line) for line in source.splitlines())


def stub(source: str, cell_type: str) -> str:
    """The cell with each solution replaced by a stub (code) or a placeholder (text)."""
    out: list[str] = []
    for is_solution, lines in split_solutions(source):
        if not is_solution:
            out.extend(lines)
        elif cell_type == "code":
            indent = BEGIN.match(lines[0]).group(1)
            out.append(indent + CODE_STUB)
        else:
            out.append(TEXT_STUB)
    return "\n".join(out)


def solution_lines(source: str) -> list[str]:
    """The stripped lines between the markers (markers excluded)."""
    return [line.strip() for is_solution, lines in split_solutions(source) if is_solution
            for line in lines if not BEGIN.match(line) and not END.match(line)]


# ---- loading an instructor source ---------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    name: str
    path: Path
    notebook: Any  # an nbformat.NotebookNode
    questions: tuple[GradedQuestion, ...]

    @property
    def max_score(self) -> float:
        return sum(q.points for q in self.questions)


def load_exercise(path: Path) -> Exercise:
    """Run the instructor source `path` and return its questions with expected answers."""
    path = Path(path)
    nb = read_notebook(path)
    namespace: dict[str, Any] = {"__name__": "__exercise__"}
    with Collector() as collector, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        for index, source in code_cells(nb):
            collector.cell = index
            _run_instructor_cell(path, index, source, namespace)
    if not collector.questions:
        raise ExerciseError(f"{path}: no question(...) declared")
    questions = tuple(resolve(path, q, namespace) for q in collector.questions)
    return Exercise(path.stem, path, nb, questions)


def _run_instructor_cell(path: Path, index: int, source: str, namespace: dict) -> None:
    try:
        exec(compile(runnable(source), f"<{path.name} cell {index}>", "exec"), namespace)
    except Exception as err:
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
        why = f"{path}: cell {index} of the instructor source fails:\n{detail}"
        raise ExerciseError(why) from err


# ---- naming a submission's cells the way a student finds them -----------------------------------
# A notebook counts all its cells, markdown included; a student sees questions and code.
# The answer cell of a question is the code cell just above its check cell (released
# notebooks) or its `question(...)` cell (instructor sources); its number comes from the
# nearest "Question N" heading above it, else from its order.
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
    cells = cells_of(nb)
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
    cells = cells_of(nb)
    source = cells[index][1] if index < len(cells) else ""
    count = sum(kind == "code" for kind, _ in cells[: index + 1])
    return f"code cell {count} from the top, counting code cells only (`{first_line(source)}`)"
