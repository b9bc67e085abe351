"""Grading: find the exercise, run the submission in a sandbox, compare here.

The expected answers stay in this process; the submission's process only ever
receives arguments and sends back plain data. The reports (results.json, the table,
the CSV) are in `reports`; a class's many submissions in `classroom`.

What goes wrong in the submission, or in finding and loading the instructor
source, ends up in the Grade's messages. An exception of the grader's own is
not caught here: it reaches the instructor with its traceback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from .answers import NOT_ANSWERED, applied_tolerance, call_text, mismatch, short
from .box import Isolation, Limits
from .halves import Submission, notebook_files, pick_halves
from .notebooks import (
    SUFFIXES,
    Exercise,
    NotebookError,
    Place,
    cell_label,
    code_cells,
    exercise_name,
    is_check_cell,
    load_exercise,
    question_places,
    read_notebook,
)
from .questions import Check, ExerciseError, GradedQuestion
from .sandbox import run_submission
from .worker import UNDEFINED

NOT_ANSWERED_SHORT = NOT_ANSWERED.split(" (")[0]  # "not answered yet"
NOT_ALLOWED = ", which this question does not allow"

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
    forbidden: tuple[str, ...] = ()  # the forbidden library functions the answer called
    hidden_failed: tuple[tuple[int, str], ...] = ()  # (number, description) of failed hidden
    answered: bool = True  # False when the name is undefined or still raises the stub's error

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
    isolation: Isolation | None = None  # how the submission's processes were contained
    notes: tuple[str, ...] = ()  # which half of a submission was graded, and why

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
               limits: Limits | None = None, *, isolation: Isolation) -> Grade:
    """Grade one submission, running it contained by `isolation` (see `isolation.choose_isolation`).

    A broken submission, an unreadable notebook, an unknown exercise or a broken
    instructor source give a Grade that says so; the grader's own bugs raise.
    """
    start, path, limits = time.monotonic(), Path(path), limits or Limits()
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
    watch = tuple(dict.fromkeys(t for q in ex.questions for t in q.watch))
    run = run_submission(cells, _job_questions(ex), limits, isolation, hidden, watch)
    places = question_places(nb, [q.name for q in ex.questions])
    questions = tuple(
        _result(q, {c: run.outcomes.get((k, c)) for c in range(len(q.checks))},
                places[q.name], run.cell_errors, run.cell_forbidden)
        for k, q in enumerate(ex.questions))
    answered_elsewhere = {p.answer_cell for p in places.values()}
    messages = tuple(f"{cell_label(nb, i, places)}: {e}" for i, e in sorted(run.cell_errors.items())
                     if not (i in answered_elsewhere and e.startswith(NOT_ANSWERED)))
    if run.survivors:
        messages += (f"the grader could not stop {run.survivors} of the submission's processes",)
    return Grade(path.name, ex.name, questions, messages, time.monotonic() - start,
                 isolation=isolation)


def grade_submission(sub: Submission, source_dir: Path | None = None, exercise: str | None = None,
                     limits: Limits | None = None, *, isolation: Isolation) -> Grade:
    """Grade the file `sub` names (`grade_file`), with its notes on the half beside it."""
    grade = grade_file(sub.path, source_dir, exercise, limits, isolation=isolation)
    return replace(grade, notes=sub.notes + grade.notes)


def submissions_in(folder: Path) -> list[Submission]:
    """The submissions in `folder`: each name once, the half graded chosen by `halves`."""
    return pick_halves(notebook_files(folder))


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
            cell_errors: dict[int, str] | None = None,
            cell_forbidden: dict[int, set[str]] | None = None) -> QuestionResult:
    """The question's score and one line per check, or one line when no check could run."""
    place = place or Place(q.name, 0, None)
    outcomes = {k: outcomes.get(k) or {"error": "stopped: not run (see the notes below)"}
                for k in range(len(q.checks))}
    errors = [o.get("error", "") for o in outcomes.values()]
    if errors and all(e == f"{q.name} {UNDEFINED}" for e in errors):
        line = f"FAIL  {_why_undefined(place, cell_errors or {})}"
        return QuestionResult(q.name, q.points, 0, len(q.checks), (line,), answered=False)
    if errors and all(e.startswith(NOT_ANSWERED) for e in errors):
        where = f" in {place.label}" if place.number else ""
        line = (f"FAIL  {NOT_ANSWERED_SHORT}: `{q.name}`{where} still raises "
                "NotImplementedError; replace that line with your solution")
        return QuestionResult(q.name, q.points, 0, len(q.checks), (line,), answered=False)
    in_cell = sorted(set(q.forbid) & (cell_forbidden or {}).get(place.answer_cell, set()))
    lines, passed, hidden_number, hidden_failed, called = [], 0, 0, [], set(in_cell)
    for k, check in enumerate(q.checks):
        outcome = outcomes[k]
        forbidden = in_cell or sorted(set(q.forbid) & set(outcome.get("forbidden", ())))
        called.update(forbidden)
        if q.on_forbidden == "fail" and forbidden:
            reason = f"called {', '.join(forbidden)}{NOT_ALLOWED}"
        elif "got" in outcome:
            reason = mismatch(check.expected, outcome["got"], q.rel, q.abs)
        else:
            reason = outcome["error"]
        passed += reason is None
        if check.hidden:
            hidden_number += 1
            if reason is not None:
                hidden_failed.append((hidden_number, check.why or f"the value of {q.name}"))
            lines.append(_hidden_line(q, hidden_number, check, reason, outcome))
        else:
            label = call_text(q.name, check.args, check.kwargs)
            lines.append(f"PASS  {label} = {short(outcome['got'])}" if reason is None
                         else f"FAIL  {label}: {reason}")
    if q.on_forbidden == "fail" and all(line.endswith(NOT_ALLOWED) for line in lines):
        lines = [f"FAIL  every check: the answer called {', '.join(sorted(called))}{NOT_ALLOWED}"]
    if called:
        cost = "the checks that called it fail" if q.on_forbidden == "fail" else \
            "reported to the instructor; the score stands"
        lines.append(f"NOTE  the answer called {', '.join(sorted(called))}, which this question "
                     f"asks you not to call ({cost})")
    return QuestionResult(q.name, q.points, passed, len(q.checks), tuple(lines),
                          tuple(sorted(called)), tuple(hidden_failed))


def _hidden_line(q: GradedQuestion, number: int, check: Check, reason: str | None,
                 outcome: dict) -> str:
    """Hidden checks say what they check (their description) and why they failed, never with
    which arguments; a value question's check shows the value, which the student chose."""
    if q.kind == "value":
        if reason is None:
            return f"PASS  the value of {q.name}"
        got = f" = {short(outcome['got'])}" if "got" in outcome else ""
        return f"FAIL  the value of {q.name}{got}: {_value_reason(q, reason, outcome)}"
    label = f"hidden check {number}" + (f" ({check.why})" if check.why else "")
    if reason is None:
        return f"PASS  {label}"
    if "got" in outcome and not reason.startswith("called "):
        return f"FAIL  {label}: wrong answer"
    if reason.startswith(("stopped", NOT_ANSWERED_SHORT, "returned a", "called ", q.name)):
        return f"FAIL  {label}: {reason}"
    return f"FAIL  {label}: raised {reason.split(':')[0][:60]}"


def _value_reason(q: GradedQuestion, reason: str, outcome: dict) -> str:
    if "got" not in outcome or reason.startswith("called "):
        return reason
    expected = q.checks[0].expected
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        tolerance = applied_tolerance(expected, outcome["got"], q.rel, q.abs)
        return f"not the expected value ({tolerance})"
    return "not the expected value"
