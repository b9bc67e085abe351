"""Grading: find the exercise, run the submission in a sandbox, compare here, report.

The expected answers stay in this process; the submission's process only ever
receives arguments and sends back plain data. Reports: Gradescope's results.json,
a table for people, a CSV for a class.

What goes wrong in the submission, or in finding and loading the instructor
source, ends up in the Grade's messages. An exception of the grader's own is
not caught here: it reaches the instructor with its traceback.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .answers import NOT_ANSWERED, call_text, mismatch, short
from .box import Isolation, Limits
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
from .questions import ExerciseError, GradedQuestion
from .sandbox import run_submission
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
    isolation: Isolation | None = None  # how the submission's processes were contained

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
    """Grade one submission, running it contained by `isolation` (see `sandbox.choose_isolation`).

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
    run = run_submission(cells, _job_questions(ex), limits, isolation, hidden)
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
                 isolation=isolation)


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


# ---- reports ------------------------------------------------------------------------------------
def results_json(grade: Grade) -> dict:
    """Gradescope's format: score, execution_time, output, and one test per question."""
    tests = [{"name": q.name, "score": q.score, "max_score": q.points,
              "status": "passed" if q.passed == q.total else "failed",
              "output": "\n".join(q.lines), "visibility": "visible"} for q in grade.questions]
    isolation = grade.isolation.record() if grade.isolation else None
    return {"score": grade.score, "execution_time": round(grade.execution_time_s, 2),
            "output": summary(grade), "visibility": "visible", "stdout_visibility": "hidden",
            "extra_data": {"isolation": isolation}, "tests": tests}


def summary(grade: Grade) -> str:
    head = f"{grade.submission}: {grade.score:g} of {grade.max_score:g} points"
    if grade.exercise:
        head += f" (exercise {grade.exercise})"
    notes = [f"- {m}" for m in grade.messages]
    if notes:
        notes.insert(0, "Problems found while running the notebook:")
    return "\n".join([head] + notes)


def write_results(grade: Grade, path: Path) -> None:
    """Write results.json atomically, then check that the file holds what was written.

    Called once the submission's processes are gone (`run_submission` returns only
    then): a temporary file in the same folder, renamed into place, read back.
    OSError if what is on disk differs.
    """
    _write_atomic(Path(path), json.dumps(results_json(grade), indent=2, allow_nan=False) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with open(path, encoding="utf-8") as f:
        if f.read() != text:
            raise OSError(f"{path} changed after the grader wrote it")


def table(grade: Grade) -> str:
    """A fixed-width table: one line per question, the checks that failed, a total."""
    lines = [summary(grade).splitlines()[0], f"{'question':<28}{'score':>8}{'max':>7}  checks"]
    for q in grade.questions:
        lines.append(f"{q.name:<28}{q.score:>8g}{q.points:>7g}  {q.passed}/{q.total}")
        lines += [f"    {line}" for line in q.lines if line.startswith("FAIL")]
    lines.append(f"{'total':<28}{grade.score:>8g}{grade.max_score:>7g}")
    lines += [f"note: {m}" for m in grade.messages]
    return "\n".join(lines)


def write_csv(grades: list[Grade], path: Path) -> None:
    """One row per submission: its score, the maximum, and each question's score."""
    names: list[str] = []
    for g in grades:
        names += [q.name for q in g.questions if q.name not in names]
    rows = [["submission", "exercise", "score", "max_score"] + names + ["notes"]]
    for g in grades:
        by_name = {q.name: q.score for q in g.questions}
        rows.append([g.submission, g.exercise or "", g.score, g.max_score]
                    + [by_name.get(n, "") for n in names] + [" | ".join(g.messages)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
