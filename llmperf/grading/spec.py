"""What a question is: its name, points, and the calls that check it, as plain records.

This is the bottom of the grading package: it imports none of its siblings.
`declare.question` builds these records; `exercise` reads them while it loads an
instructor source, through the collector defined here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


def current_collector() -> _Collector | None:
    """The collector of the source being loaded, or None when a notebook runs by hand."""
    return _collector


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
