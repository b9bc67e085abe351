"""Loading an instructor source: run it in this process, collect its questions and answers.

The instructor's notebook is trusted. Running it yields each question's checks
and the expected answers (from the reference, or else from the solution), all
as plain data, so that a submission never sees or computes them.
"""
from __future__ import annotations

import contextlib
import io
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import spec
from .notebook import code_cells, read_notebook, runnable
from .plain import NotPlainData, to_plain

if TYPE_CHECKING:
    import nbformat

FUNCTION, VALUE = "function", "value"


class ExerciseError(Exception):
    """The instructor source is broken: a grader setup problem, not the student's."""


@dataclass(frozen=True)
class Check:
    """One call (or, for a variable, one look-up) and its expected answer."""

    args: list
    kwargs: dict
    expected: Any
    hidden: bool


@dataclass(frozen=True)
class GradedQuestion:
    name: str
    points: float
    kind: str  # FUNCTION or VALUE
    checks: tuple[Check, ...]
    rel: float
    abs: float
    cell: int | None

    @property
    def visible_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.hidden)

    @property
    def hidden_count(self) -> int:
        return sum(c.hidden for c in self.checks)


@dataclass(frozen=True)
class Exercise:
    name: str
    path: Path
    notebook: nbformat.NotebookNode  # noqa: F821 (imported for type checkers only)
    questions: tuple[GradedQuestion, ...]

    @property
    def max_score(self) -> float:
        return sum(q.points for q in self.questions)


def load_exercise(path: Path) -> Exercise:
    """Run the instructor source `path` and return its questions with expected answers."""
    path = Path(path)
    nb = read_notebook(path)
    namespace: dict[str, Any] = {"__name__": "__exercise__"}
    collector = spec.collecting()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for index, source in code_cells(nb):
                collector.cell = index
                _run_cell(path, index, source, namespace)
        declared = list(collector.questions)
    finally:
        spec.stop_collecting()
    if not declared:
        raise ExerciseError(f"{path}: no question(...) declared")
    questions = tuple(resolve(path, q, namespace) for q in declared)
    return Exercise(path.stem, path, nb, questions)


def _run_cell(path: Path, index: int, source: str, namespace: dict) -> None:
    try:
        exec(compile(runnable(source), f"<{path.name} cell {index}>", "exec"), namespace)
    except Exception as err:
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
        why = f"{path}: cell {index} of the instructor source fails:\n{detail}"
        raise ExerciseError(why) from err


def resolve(path: Path, q: spec.Question, namespace: dict) -> GradedQuestion:
    where = f"{path.name}, question {q.name!r}"
    if q.name not in namespace:
        raise ExerciseError(f"{where}: the solution defines no {q.name!r}")
    answer = namespace[q.name]
    if callable(answer):
        fn = q.reference or answer
        checks = [_check(where, fn, c, False) for c in q.visible] + \
                 [_check(where, fn, c, True) for c in q.hidden]
        if not checks:
            raise ExerciseError(f"{where}: a function needs at least one visible or hidden check")
        kind = FUNCTION
    else:
        if q.visible or q.hidden:
            raise ExerciseError(f"{where}: {q.name} is a variable; it takes no checks")
        value = q.reference() if q.reference else answer
        checks = [Check([], {}, _plain(where, value), True)]
        kind = VALUE
    return GradedQuestion(q.name, q.points, kind, tuple(checks), q.rel, q.abs, q.cell)


def _check(where: str, fn, case: spec.Case, hidden: bool) -> Check:
    # Arguments travel to the submission as JSON; compute the answer from the same values.
    args = json.loads(json.dumps(_plain(where, list(case.args))))
    kwargs = json.loads(json.dumps(_plain(where, dict(case.kwargs))))
    if case.expect is not spec.UNSET:
        expected = case.expect
    else:
        try:
            expected = fn(*args, **kwargs)
        except Exception as err:
            why = f"{where}: the reference fails on {args} {kwargs}: {err!r}"
            raise ExerciseError(why) from err
    return Check(args, kwargs, _plain(where, expected), hidden)


def _plain(where: str, value: Any) -> Any:
    try:
        return to_plain(value)
    except NotPlainData as err:
        raise ExerciseError(f"{where}: {err}") from err
