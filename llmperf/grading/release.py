"""Release: turn an instructor source into the notebook students receive.

Solutions become stubs that raise NotImplementedError, each question cell
becomes a cell that runs its visible checks (expected answers written in),
cells tagged "instructor" are dropped, and outputs are cleared. Nothing else
changes, and the same source always gives byte-identical files.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .answers import form, to_source
from .notebooks import (
    CHECK_MARK,
    METADATA_KEY,
    Exercise,
    has_solution,
    load_exercise,
    solution_lines,
    split_solutions,
    stub,
)
from .questions import FUNCTION, GradedQuestion

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
INSTRUCTOR_TAG = "instructor"
FORBIDDEN = ("BEGIN SOLUTION", "END SOLUTION", "hidden=", "reference=")


class ReleaseError(ValueError):
    """The released notebook would give something away."""


def check_cell_source(q: GradedQuestion) -> str:
    """The cell that replaces a question declaration in the student's notebook."""
    head = [f"{CHECK_MARK} to `{q.name}`: run this cell.",
            "from llmperf.grading import check"]
    options = f"points={q.points:g}, hidden_checks={q.hidden_count}, rel={q.rel!r}, abs={q.abs!r}"
    if q.forbid:
        options += f", forbid={to_source(list(q.forbid))}, on_forbidden={q.on_forbidden!r}"
    if q.kind != FUNCTION:  # its form (a number, a list of 2, ...), never its value
        shape = to_source(form(q.checks[0].expected))
        return "\n".join(head + [f"check({q.name!r}, {options}, value=True, shape={shape});"])
    lines = [f"check({q.name!r}, {options}, cases=["]
    for c in q.visible_checks:
        kwargs = f', "kwargs": {to_source(c.kwargs)}' if c.kwargs else ""
        expect = to_source(c.expected)
        lines.append(f'    {{"args": {to_source(c.args)}{kwargs}, "expect": {expect}}},')
    lines.append("]);")  # the semicolon keeps the notebook from echoing True or False
    return "\n".join(head + lines)


def student_notebook(ex: Exercise) -> nbformat.NotebookNode:
    """The released notebook of exercise `ex`."""
    by_cell = {q.cell: q for q in ex.questions}
    cells = []
    for index, cell in enumerate(ex.notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if INSTRUCTOR_TAG in tags:
            continue
        if index in by_cell:
            source, kind = check_cell_source(by_cell[index]), "code"
        else:
            source, kind = stub(cell.source, cell.cell_type), cell.cell_type
        new = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
        new["id"] = f"cell-{len(cells):03d}"
        cells.append(new)
    meta = {"kernelspec": KERNELSPEC,
            METADATA_KEY: {"exercise": ex.name,
                           "questions": {q.name: q.points for q in ex.questions},
                           "max_score": ex.max_score}}
    return new_notebook(cells=cells, metadata=meta)


def leaks(ex: Exercise, released_text: str) -> list[str]:
    """Solution lines or check declarations that appear in the released text."""
    outside = set()
    for cell in ex.notebook.cells:
        outside.update(line.strip() for is_sol, lines in split_solutions(cell.source)
                       if not is_sol for line in lines)
    secret = {line for cell in ex.notebook.cells if has_solution(cell.source)
              for line in solution_lines(cell.source)}
    found = [line for line in sorted(secret - outside) if line and line in released_text]
    return found + [word for word in FORBIDDEN if word in released_text]


def release(source: Path, output: Path, write_py: bool = True) -> list[Path]:
    """Write OUTPUT/NAME.ipynb (and NAME.py) for the instructor source `source`."""
    ex = load_exercise(Path(source))
    nb = student_notebook(ex)
    text = nbformat.writes(nb) + "\n"
    found = leaks(ex, text)
    if found:
        raise ReleaseError(f"{source}: the release would show {found[:5]}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = [output / f"{ex.name}.ipynb"]
    written[0].write_text(text, encoding="utf-8")
    if write_py:
        import jupytext

        text_nb = nbformat.from_dict(nb)  # keep the exercise's identity in the .py header too
        text_nb.metadata["jupytext"] = {"notebook_metadata_filter": f"{METADATA_KEY},kernelspec"}
        written.append(output / f"{ex.name}.py")
        written[1].write_text(jupytext.writes(text_nb, fmt="py:percent"), encoding="utf-8")
    return written
