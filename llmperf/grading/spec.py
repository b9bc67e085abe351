"""How an instructor declares a question: its name, points, and the calls that check it.

    question("ridge_point", points=1,
             visible=[(125e12, 600e9)],            # arguments of one call each
             hidden=[(989e12, 3.35e12)],
             reference=lambda peak, bw: ...)        # optional; default: the solution itself

When a grader or `llmperf release` loads the instructor source, each call is
recorded with the cell that made it. Run by hand in Jupyter, it checks the
instructor's own solution against the reference at once and prints the result.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Case:
    """One check: call the student's function with these arguments.

    `expect`, when given, is the answer; otherwise the reference (or the
    instructor's solution) computes it in the grader's process.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expect: Any = UNSET


def case(*args: Any, expect: Any = UNSET, **kwargs: Any) -> Case:
    """A check with keyword arguments or a fixed expected answer: case(4096, 128, expect=62.4)."""
    return Case(args, kwargs, expect)


@dataclass(frozen=True)
class Question:
    """A graded function or value of an exercise notebook."""

    name: str
    points: float
    visible: tuple[Case, ...] = ()
    hidden: tuple[Case, ...] = ()
    reference: Callable[..., Any] | None = None
    rel: float = 1e-6
    abs: float = 0.0
    cell: int | None = None  # index of the declaring cell in the instructor's notebook


class _Collector:
    """Where `question` records declarations while a loader runs an instructor source."""

    def __init__(self) -> None:
        self.cell: int | None = None
        self.questions: list[Question] = []


_collector: _Collector | None = None


def collecting() -> _Collector:
    """Start recording `question` calls (used by the loader, one source at a time)."""
    global _collector
    _collector = _Collector()
    return _collector


def stop_collecting() -> None:
    global _collector
    _collector = None


def question(name: str, points: float, visible: Any = (), hidden: Any = (),
             reference: Callable[..., Any] | None = None, rel: float = 1e-6,
             abs: float = 0.0) -> None:
    """Declare that `name` (a function, or a variable) is graded for `points` points.

    visible, hidden: the checks, each a tuple of positional arguments, a dict of
    keyword arguments, a `case(...)`, or any other value as a single argument.
    A variable (not a function) takes no checks: its value is compared once.
    reference: computes the expected answer from the same arguments (by default
    the instructor's solution does). rel, abs: tolerances for numbers.
    """
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"question name must be a Python identifier, got {name!r}")
    if not points > 0:
        raise ValueError(f"question {name!r}: points must be positive, got {points!r}")
    q = Question(name, float(points), _cases(visible), _cases(hidden), reference, rel, abs)
    if _collector is not None:
        q = replace(q, cell=_collector.cell)
        if any(other.name == name for other in _collector.questions):
            raise ValueError(f"question {name!r} is declared twice")
        _collector.questions.append(q)
        return
    from .feedback import self_check  # an instructor running the source by hand
    self_check(q, sys._getframe(1).f_globals)


def _cases(items: Any) -> tuple[Case, ...]:
    return tuple(_as_case(item) for item in items)


def _as_case(item: Any) -> Case:
    if isinstance(item, Case):
        return item
    if isinstance(item, tuple):
        return Case(item)
    if isinstance(item, dict):
        return Case((), dict(item))
    return Case((item,))
