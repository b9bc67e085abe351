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
from .feedback import NOT_ANSWERED, call_text
from .notebook import (
    SUFFIXES,
    NotebookError,
    code_cells,
    exercise_name,
    is_check_cell,
    read_notebook,
)
from .places import Place, cell_label, question_places
from .plain import short
from .sandbox import Limits, run_submission
from .worker import UNDEFINED

NOT_ANSWERED_SHORT = NOT_ANSWERED.split(" (")[0]  # "not answered yet"

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
    isolation: str = ""  # how the submission's processes were contained (see sandbox)

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
               limits: Limits | None = None) -> Grade:
    """Grade one submission. Never raises: whatever happens ends up in the Grade's messages."""
    start = time.monotonic()
    try:
        return _grade_file(Path(path), source_dir, exercise, limits or Limits())
    except Exception as err:  # a bug of the grader's own: still leave a valid report
        why = f"the grader failed on {Path(path).name}: {type(err).__name__}: {err}"
        elapsed = time.monotonic() - start
        return Grade(Path(path).name, exercise, (), (why,), elapsed, setup_error=True)


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
    hidden = (source_dir, path.parent, PACKAGE_EXERCISES)
    run = run_submission(cells, _job_questions(ex), limits, hidden)
    places = question_places(nb, [q.name for q in ex.questions])
    questions = tuple(
        _result(q, {c: run.outcomes.get((k, c)) for c in range(len(q.checks))},
                places[q.name], run.cell_errors)
        for k, q in enumerate(ex.questions))
    answered_elsewhere = {p.answer_cell for p in places.values()}
    messages = tuple(f"{cell_label(nb, i, places)}: {e}" for i, e in sorted(run.cell_errors.items())
                     if not (i in answered_elsewhere and e.startswith(NOT_ANSWERED)))
    if run.survivors:
        messages += (f"the grader could not stop {run.survivors} of the submission's processes",)
    return Grade(path.name, ex.name, questions, messages, time.monotonic() - start,
                 isolation=run.isolation)


def _job_questions(ex: Exercise) -> list[dict]:
    """What the submission's process is told: names and arguments, no answers."""
    return [{"name": q.name, "kind": q.kind,
             "checks": [{"args": c.args, "kwargs": c.kwargs} for c in q.checks]}
            for q in ex.questions]


def _why_undefined(place: Place, cell_errors: dict[int, str]) -> str:
    """What to tell a student whose notebook does not define the question's name."""
    error = cell_errors.get(place.answer_cell) if place.answer_cell is not None else None
    if error is None and place.answer_cell is None:
        return (f"`{place.name}` is not defined: no cell defines it (was {place.label} "
                "deleted, or the name changed?)")
    if error is None:
        return (f"`{place.name}` is not defined: {place.label} ran but did not define it "
                "(was the name changed?)")
    if error.startswith(NOT_ANSWERED):
        return f"{NOT_ANSWERED_SHORT}: {place.label} still raises NotImplementedError"
    return f"`{place.name}` is not defined: {place.label} stopped with {error}"


def _result(q: GradedQuestion, outcomes: dict, place: Place | None = None,
            cell_errors: dict[int, str] | None = None) -> QuestionResult:
    """The question's score and one line per check, or one line when no check could run."""
    place = place or Place(q.name, 0, None)
    outcomes = {k: outcomes.get(k) or {"error": "stopped: not run (see the notes below)"}
                for k in range(len(q.checks))}
    errors = [o.get("error", "") for o in outcomes.values()]
    if errors and all(e == f"{q.name} {UNDEFINED}" for e in errors):
        line = f"FAIL  {_why_undefined(place, cell_errors or {})}"
        return QuestionResult(q.name, q.points, 0, len(q.checks), (line,))
    if errors and all(e.startswith(NOT_ANSWERED) for e in errors):
        where = f" in {place.label}" if place.number else ""
        line = (f"FAIL  {NOT_ANSWERED_SHORT}: `{q.name}`{where} still raises "
                "NotImplementedError; replace that line with your solution")
        return QuestionResult(q.name, q.points, 0, len(q.checks), (line,))
    lines, passed, hidden_number = [], 0, 0
    for k, check in enumerate(q.checks):
        outcome = outcomes[k]
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
    if reason.startswith(("stopped", NOT_ANSWERED_SHORT, "returned a", q.name)):
        return f"FAIL  {label}: {reason}"
    return f"FAIL  {label}: raised {reason.split(':')[0][:60]}"


def submissions_in(folder: Path) -> list[Path]:
    """The notebooks in `folder` (not its subfolders), sorted by name: each .ipynb, and each
    .py that has no .ipynb of the same name beside it (release writes both)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix in SUFFIXES]
    notebooks = {p.stem for p in files if p.suffix == ".ipynb"}
    return sorted(p for p in files if p.suffix == ".ipynb" or p.stem not in notebooks)
