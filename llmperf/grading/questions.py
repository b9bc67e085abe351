"""Questions: how an instructor declares what is graded, and the checks it resolves to.

    question("ridge_point", points=1,
             visible=[(125e12, 600e9)],            # arguments of one call each
             hidden=[case(989e12, 3.35e12, why="an H100 SXM's datasheet")],
             reference=lambda peak, bw: ...,        # optional; default: the solution itself
             forbid=["llmperf.Accelerator.ridge_point"])  # optional: calls to report

A hidden check is always a `case(...)` with `why=`: the one line a student reads when it
fails, since its arguments are never shown.

While a loader runs an instructor source (`notebooks.load_exercise`), it holds a
`Collector` open and each `question(...)` call is recorded there with the cell that
made it. Run by hand (in Jupyter, or `python exercises/NN_topic.py`), no collector is
open: `question` checks the instructor's own solution, found in the notebook's
namespace (the `__main__` module), against the reference at once and prints the result.

`resolve` turns a declared question into graded checks with their expected answers,
all plain data, computed in the grader's process from the trusted solution.
"""
from __future__ import annotations

import contextvars
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .answers import NotPlainData, points_text, run_check, to_plain
from .watch import targets

FUNCTION, VALUE = "function", "value"
ON_FORBIDDEN = ("report", "fail")  # a forbidden call is only reported, or fails its checks
WHY_LIMIT = 120  # characters of a hidden check's description


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class ExerciseError(Exception):
    """The instructor source is broken: a grader setup problem, not the student's."""


# ---- what an instructor declares ----------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One check: call the student's function with these arguments.

    `expect`, when given, is the answer; otherwise the reference (or the
    instructor's solution) computes it in the grader's process. `why` says in one
    line what the check is about; students see it when a hidden check fails.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expect: Any = UNSET
    why: str | None = None


def case(*args: Any, expect: Any = UNSET, why: str | None = None, **kwargs: Any) -> Case:
    """One check: case(4096, d=128, why="a head of 128"), case(8, expect=64, why="...").

    why: one line, what the check is about (required for a hidden check: a student who
    fails it reads this line, never the arguments). expect: the answer, fixed by hand.
    """
    if why is not None and not (isinstance(why, str) and why.strip() and "\n" not in why
                                and len(why) <= WHY_LIMIT):
        raise ValueError(f"case(..., why=...): a description of one line of at most {WHY_LIMIT} "
                         f"characters, got {why!r}")
    return Case(args, kwargs, expect, why.strip() if why else None)


@dataclass(frozen=True)
class Question:
    """A graded function or value of an exercise notebook, as declared."""

    name: str
    points: float
    visible: tuple[Case, ...] = ()
    hidden: tuple[Case, ...] = ()
    reference: Callable[..., Any] | None = None
    rel: float = 1e-6
    abs: float = 0.0
    cell: int | None = None  # index of the declaring cell in the instructor's notebook
    forbid: tuple[str, ...] = ()  # llmperf functions the answer must not call
    on_forbidden: str = "report"  # "report": noted only; "fail": the checks that called one fail


def cases(items: Any) -> tuple[Case, ...]:
    return tuple(_as_case(item) for item in items)


def _as_case(item: Any) -> Case:
    if isinstance(item, Case):
        return item
    if isinstance(item, tuple):
        return Case(item)
    if isinstance(item, dict):
        return Case((), dict(item))
    return Case((item,))


# ---- collecting declarations --------------------------------------------------------------------
_open_collector: contextvars.ContextVar[Collector | None] = \
    contextvars.ContextVar("llmperf_grading_collector", default=None)


class Collector:
    """Records the `question(...)` calls of one instructor source while a loader runs it.

        with Collector() as collector:
            for index, source in cells:
                collector.cell = index
                exec(source, namespace)
        collector.questions

    Collectors nest: leaving one reopens the one that was open before.
    """

    def __init__(self) -> None:
        self.cell: int | None = None
        self.questions: list[Question] = []
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Collector:
        self._token = _open_collector.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _open_collector.reset(self._token)

    def add(self, q: Question) -> None:
        if any(other.name == q.name for other in self.questions):
            raise ValueError(f"question {q.name!r} is declared twice")
        self.questions.append(replace(q, cell=self.cell))


def question(name: str, points: float, visible: Any = (), hidden: Any = (),
             reference: Callable[..., Any] | None = None, rel: float = 1e-6,
             abs: float = 0.0, forbid: Any = (), on_forbidden: str = "report") -> None:
    """Declare that `name` (a function, or a variable) is graded for `points` points.

    visible: the checks whose call and answer the student sees, each a tuple of
    positional arguments, a dict of keyword arguments, a `case(...)`, or any other
    value as a single argument. hidden: checks the student never sees, each a
    `case(..., why="one line on what it checks")`. A variable (not a function) takes
    no checks: its value is compared once.
    reference: computes the expected answer from the same arguments (by default
    the instructor's solution does). rel, abs: tolerances for numbers.
    forbid: dotted names of llmperf functions, methods, classes or modules that the
    answer must not call ("llmperf.max_batch_size"); the grader reports each call the
    answer makes. on_forbidden: "report" (the score stands) or "fail" (every check
    during which the answer called one fails, and all of them if its cell did).
    """
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"question name must be a Python identifier, got {name!r}")
    if not points > 0:
        raise ValueError(f"question {name!r}: points must be positive, got {points!r}")
    if on_forbidden not in ON_FORBIDDEN:
        raise ValueError(f"question {name!r}: on_forbidden must be one of {ON_FORBIDDEN}, "
                         f"got {on_forbidden!r}")
    if isinstance(forbid, str) or not all(isinstance(f, str) for f in forbid):
        raise ValueError(f"question {name!r}: forbid must be a list of dotted names such as "
                         f"'llmperf.max_batch_size', got {forbid!r}")
    hidden_cases = cases(hidden)
    for number, c in enumerate(hidden_cases, start=1):
        if c.why is None:
            raise ValueError(f"question {name!r}: hidden check {number} has no description; "
                             "write it case(..., why='what it checks, in one line')")
    q = Question(name, float(points), cases(visible), hidden_cases, reference, rel, abs,
                 forbid=tuple(forbid), on_forbidden=on_forbidden)
    collector = _open_collector.get()
    if collector is None:  # an instructor running the source by hand
        self_check(q, notebook_namespace())
    else:
        collector.add(q)


def notebook_namespace() -> dict:
    """The globals of a notebook run by hand: Jupyter's kernel and `python FILE` run in __main__."""
    return vars(sys.modules["__main__"])


def self_check(q: Question, namespace: dict) -> None:
    """Check the solution in `namespace` against the reference, as the grader would."""
    try:
        graded = resolve(Path("notebook"), q, namespace)
    except ExerciseError as err:
        print(f"question {q.name}: {err}")
        return
    obj = namespace[q.name]
    results = [run_check(obj, q.name, c.args, c.kwargs, c.expected, graded.rel, graded.abs,
                         graded.kind == VALUE) for c in graded.checks]
    bad = [m for ok, m in results if not ok]
    forbids = f"; forbids {', '.join(q.forbid)} ({q.on_forbidden})" if q.forbid else ""
    print(f"question {q.name} ({points_text(q.points)}): {len(graded.visible_checks)} "
          f"visible and {graded.hidden_count} hidden checks{forbids}; the solution passes "
          f"{len(results) - len(bad)} of {len(results)}")
    for message in bad:
        print(f"  FAIL  {message}")


# ---- what the grader checks ---------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One call (or, for a variable, one look-up) and its expected answer."""

    args: list
    kwargs: dict
    expected: Any
    hidden: bool
    why: str | None = None


@dataclass(frozen=True)
class GradedQuestion:
    name: str
    points: float
    kind: str  # FUNCTION or VALUE
    checks: tuple[Check, ...]
    rel: float
    abs: float
    cell: int | None
    forbid: tuple[str, ...] = ()
    on_forbidden: str = "report"
    watch: tuple[tuple[str, str, str, int], ...] = ()  # the forbidden code, for the worker

    @property
    def visible_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.hidden)

    @property
    def hidden_count(self) -> int:
        return sum(c.hidden for c in self.checks)


def resolve(path: Path, q: Question, namespace: dict) -> GradedQuestion:
    """The question's checks with their expected answers, from the solution in `namespace`."""
    where = f"{path.name}, question {q.name!r}"
    if q.name not in namespace:
        raise ExerciseError(f"{where}: the solution defines no {q.name!r}")
    answer = namespace[q.name]
    if callable(answer):
        fn = q.reference or answer
        checks = [_expected(where, fn, c, False) for c in q.visible] + \
                 [_expected(where, fn, c, True) for c in q.hidden]
        if not checks:
            raise ExerciseError(f"{where}: a function needs at least one visible or hidden check")
        kind = FUNCTION
    else:
        if q.visible or q.hidden:
            raise ExerciseError(f"{where}: {q.name} is a variable; it takes no checks")
        value = q.reference() if q.reference else answer
        checks = [Check([], {}, _plain(where, value), True)]
        kind = VALUE
    try:
        watch = tuple(t for label in q.forbid for t in targets(label))
    except ValueError as err:
        raise ExerciseError(f"{where}: {err}") from err
    return GradedQuestion(q.name, q.points, kind, tuple(checks), q.rel, q.abs, q.cell,
                          q.forbid, q.on_forbidden, watch)


def _expected(where: str, fn: Callable[..., Any], c: Case, hidden: bool) -> Check:
    # Arguments travel to the submission as JSON; compute the answer from the same values.
    args = json.loads(json.dumps(_plain(where, list(c.args))))
    kwargs = json.loads(json.dumps(_plain(where, dict(c.kwargs))))
    if c.expect is not UNSET:
        expected = c.expect
    else:
        try:
            expected = fn(*args, **kwargs)
        except Exception as err:
            why = f"{where}: the reference fails on {args} {kwargs}: {err!r}"
            raise ExerciseError(why) from err
    return Check(args, kwargs, _plain(where, expected), hidden, c.why)


def _plain(where: str, value: Any) -> Any:
    try:
        return to_plain(value)
    except NotPlainData as err:
        raise ExerciseError(f"{where}: {err}") from err
