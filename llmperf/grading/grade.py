"""Grading: find the exercise, run the submission in a sandbox, compare here, report.

The expected answers stay in this process; the submission's process only ever
receives arguments and sends back plain data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .compare import mismatch
from .exercise import Exercise, ExerciseError, GradedQuestion, load_exercise
from .feedback import call_text
from .notebook import (NotebookError, SUFFIXES, code_cells, exercise_name, first_line,
                       is_check_cell, read_notebook)
from .plain import short
from .sandbox import Limits, run_submission

PACKAGE_EXERCISES = Path(__file__).resolve().parents[2] / "exercises"


class SetupError(Exception):
    """The grader cannot grade this at all: unknown exercise or a broken instructor source."""


@dataclass(frozen=True)
class QuestionResult:
    name: str
    points: float
    passed: int
    total: int
    lines: tuple[str, ...]

    @property
    def score(self) -> float:
        return round(self.points * self.passed / self.total, 2) if self.total else 0.0


@dataclass(frozen=True)
class Grade:
    submission: str
    exercise: str | None
    questions: tuple[QuestionResult, ...]
    messages: tuple[str, ...]
    execution_time_s: float
    setup_error: bool = False

    @property
    def score(self) -> float:
        return round(sum(q.score for q in self.questions), 2)

    @property
    def max_score(self) -> float:
        return sum(q.points for q in self.questions)


def default_source_dir() -> Path:
    here = Path("exercises")
    return here if here.is_dir() else PACKAGE_EXERCISES


def find_source(name: str, source_dir: Path) -> Path:
    for suffix in SUFFIXES[::-1]:  # the .py source first
        path = Path(source_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    raise SetupError(f"no instructor source for exercise {name!r} in {source_dir}")


@lru_cache(maxsize=32)
def _load(path: str, mtime: float) -> Exercise:
    return load_exercise(Path(path))


def load_for(name: str, source_dir: Path) -> Exercise:
    path = find_source(name, source_dir)
    try:
        return _load(str(path.resolve()), path.stat().st_mtime)
    except (ExerciseError, NotebookError) as err:
        raise SetupError(str(err)) from err


def grade_file(path: Path, source_dir: Path | None = None, exercise: str | None = None,
               limits: Limits = Limits()) -> Grade:
    """Grade one submission. Never raises: whatever happens ends up in the Grade's messages."""
    start = time.monotonic()
    try:
        return _grade_file(Path(path), source_dir, exercise, limits)
    except Exception as err:  # a bug of the grader's own: still leave a valid report
        why = f"the grader failed on {Path(path).name}: {type(err).__name__}: {err}"
        return Grade(Path(path).name, exercise, (), (why,), time.monotonic() - start, setup_error=True)


def _grade_file(path: Path, source_dir: Path | None, exercise: str | None, limits: Limits) -> Grade:
    start = time.monotonic()
    source_dir = Path(source_dir) if source_dir else default_source_dir()
    nb, read_error = None, None
    try:
        nb = read_notebook(path)
    except NotebookError as err:
        read_error = str(err)
    name = exercise or (exercise_name(nb) if nb is not None else None) or path.stem
    try:
        ex = load_for(name, source_dir)
    except SetupError as err:
        why = f"cannot grade {path.name}: {err}"
        if not exercise and (nb is None or not exercise_name(nb)):
            why += " (the notebook names no exercise in its metadata; pass --exercise NAME)"
        return Grade(path.name, None, (), (why,), time.monotonic() - start, setup_error=True)
    if read_error:
        questions = tuple(_result(q, {}) for q in ex.questions)
        return Grade(path.name, ex.name, questions, (read_error,), time.monotonic() - start)
    cells = [(i, s) for i, s in code_cells(nb) if not is_check_cell(s)]
    run = run_submission(cells, _job_questions(ex), limits)
    questions = tuple(_result(q, {c: run.outcomes.get((k, c)) for c in range(len(q.checks))})
                      for k, q in enumerate(ex.questions))
    messages = tuple(_cell_message(nb, i, e) for i, e in sorted(run.cell_errors.items()))
    return Grade(path.name, ex.name, questions, messages, time.monotonic() - start)


def _job_questions(ex: Exercise) -> list[dict]:
    """What the submission's process is told: names and arguments, no answers."""
    return [{"name": q.name, "kind": q.kind,
             "checks": [{"args": c.args, "kwargs": c.kwargs} for c in q.checks]}
            for q in ex.questions]


def _result(q: GradedQuestion, outcomes: dict) -> QuestionResult:
    lines, passed, hidden_number = [], 0, 0
    for k, check in enumerate(q.checks):
        outcome = outcomes.get(k) or {"error": "stopped: not run (see the notes below)"}
        if "got" in outcome:
            reason = mismatch(check.expected, outcome["got"], q.rel, q.abs)
        else:
            reason = outcome["error"]
        passed += reason is None
        if check.hidden:
            hidden_number += 1
            lines.append(_hidden_line(q, hidden_number, reason, "got" in outcome))
        else:
            label = call_text(q.name, check.args, check.kwargs)
            lines.append(f"PASS  {label} = {short(outcome['got'])}" if reason is None
                         else f"FAIL  {label}: {reason}")
    return QuestionResult(q.name, q.points, passed, len(q.checks), tuple(lines))


def _hidden_line(q: GradedQuestion, number: int, reason: str | None, returned: bool) -> str:
    """Hidden checks say whether they passed and why not, never with which arguments."""
    label = "the value" if q.kind == "value" else f"hidden check {number}"
    if reason is None:
        return f"PASS  {label}"
    if returned:
        return f"FAIL  {label}: wrong answer"
    if reason.startswith(("stopped", "not written", "returned a", q.name)):
        return f"FAIL  {label}: {reason}"
    return f"FAIL  {label}: raised {reason.split(':')[0][:60]}"


def _cell_message(nb, index: int, error: str) -> str:
    source = nb.cells[index].get("source", "") if index < len(nb.cells) else ""
    source = "".join(source) if isinstance(source, list) else str(source)
    return f"cell {index + 1} ({first_line(source)}): {error}"


def submissions_in(folder: Path) -> list[Path]:
    """The notebooks in `folder` (not its subfolders), sorted by name: each .ipynb, and each
    .py that has no .ipynb of the same name beside it (release writes both)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix in SUFFIXES]
    notebooks = {p.stem for p in files if p.suffix == ".ipynb"}
    return sorted(p for p in files if p.suffix == ".ipynb" or p.stem not in notebooks)
