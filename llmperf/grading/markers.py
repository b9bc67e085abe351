"""Solution markers: `### BEGIN SOLUTION` ... `### END SOLUTION` (nbgrader's spelling)."""
from __future__ import annotations

import re

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
