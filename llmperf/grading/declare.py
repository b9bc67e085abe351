"""How an instructor declares a question: `question(name, points, visible, hidden, ...)`.

    question("ridge_point", points=1,
             visible=[(125e12, 600e9)],            # arguments of one call each
             hidden=[(989e12, 3.35e12)],
             reference=lambda peak, bw: ...)        # optional; default: the solution itself

When a grader or `llmperf release` loads the instructor source, each call is
recorded with the cell that made it. Run by hand in Jupyter, it checks the
instructor's own solution against the reference at once and prints the result.
This module sits above `spec`, `exercise` and `feedback`; none of them imports it.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .exercise import ExerciseError, resolve
from .feedback import points_text, run_check
from .spec import Question, cases, current_collector


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
    q = Question(name, float(points), cases(visible), cases(hidden), reference, rel, abs)
    collector = current_collector()
    if collector is None:  # an instructor running the source by hand
        self_check(q, sys._getframe(1).f_globals)
        return
    if any(other.name == name for other in collector.questions):
        raise ValueError(f"question {name!r} is declared twice")
    collector.questions.append(replace(q, cell=collector.cell))


def self_check(q: Question, namespace: dict) -> None:
    """Check the solution in `namespace` against the reference, as the grader would."""
    try:
        graded = resolve(Path("notebook"), q, namespace)
    except ExerciseError as err:
        print(f"question {q.name}: {err}")
        return
    obj = namespace[q.name]
    results = [run_check(obj, q.name, c.args, c.kwargs, c.expected, graded.rel, graded.abs,
                         graded.kind == "value") for c in graded.checks]
    bad = [m for ok, m in results if not ok]
    print(f"question {q.name} ({points_text(q.points)}): {len(graded.visible_checks)} "
          f"visible and {graded.hidden_count} hidden checks; the solution passes "
          f"{len(results) - len(bad)} of {len(results)}")
    for message in bad:
        print(f"  FAIL  {message}")
