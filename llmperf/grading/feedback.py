"""Feedback inside a notebook: run a question's visible checks and print what happened.

Released notebooks call `check(...)` in the cell after each question; the
expected answers are written into that call by `llmperf release`.
"""
from __future__ import annotations

import sys
from typing import Any

from .compare import applied_tolerance, mismatch
from .plain import NotPlainData, short, to_plain

NOT_ANSWERED = "not answered yet (it raises NotImplementedError)"


def points_text(points: float) -> str:
    return f"{points:g} point{'s' * (points != 1)}"


def call_text(name: str, args: list, kwargs: dict) -> str:
    parts = [short(a, 30) for a in args] + [f"{k}={short(v, 30)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def run_check(obj: Any, name: str, args: list, kwargs: dict, expected: Any,
              rel: float, abs_tol: float, is_value: bool) -> tuple[bool, str]:
    """(passed, message) for one check of the object the notebook bound to `name`."""
    label = name if is_value else call_text(name, args, kwargs)
    try:
        got = to_plain(obj if is_value else obj(*args, **kwargs))
    except NotImplementedError:
        return False, f"{label}: {NOT_ANSWERED}"
    except NotPlainData as err:
        return False, f"{label}: returned {err}"
    except Exception as err:
        return False, f"{label}: raised {type(err).__name__}: {err}"
    reason = mismatch(expected, got, rel, abs_tol)
    if reason:
        return False, f"{label}: {reason}"
    tolerance = applied_tolerance(expected, got, rel, abs_tol)
    return True, f"{label} = {short(got)} (expected {short(expected)}, {tolerance})"


def check(name: str, cases: list | None = None, points: float | None = None, hidden_checks: int = 0,
          rel: float = 1e-6, abs: float = 0.0, value: bool = False) -> bool:
    """Run the visible checks of question `name` against the notebook's own definition.

    cases: dicts with "args", "kwargs" and "expect". Prints PASS or FAIL per check
    and returns True when all pass.
    """
    namespace = sys._getframe(1).f_globals
    header = f"{name}" + (f" ({points_text(points)})" if points else "")
    print(header)
    if name not in namespace:
        print(f"  FAIL  {name} is not defined: run the cell that defines it first")
        return False
    obj = namespace[name]
    if value:
        return _check_value(name, obj)
    if not callable(obj):
        print(f"  FAIL  {name} should be a function, but it is a {type(obj).__name__}")
        return False
    passed = 0
    for c in cases or []:
        ok, message = run_check(obj, name, c.get("args", []), c.get("kwargs", {}), c.get("expect"),
                                rel, abs, value)
        passed += ok
        print(f"  {'PASS' if ok else 'FAIL'}  {message}")
    total = len(cases or [])
    more = f"; the grader also runs {hidden_checks} hidden check{'s' * (hidden_checks != 1)}" \
        if hidden_checks else ""
    print(f"{passed} of {total} visible checks passed{more}.")
    return passed == total


def _check_value(name: str, obj: Any) -> bool:
    try:
        got = to_plain(obj)
    except NotPlainData as err:
        print(f"  FAIL  {name} holds {err}")
        return False
    print(f"  OK    {name} = {short(got)}: recorded; the grader checks its value.")
    return True
