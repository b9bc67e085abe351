"""Answers: plain data, comparing an answer with the expected one, and feedback in the notebook.

Plain data is what may cross from a submission's process to the grader's: numbers,
strings, booleans, None, lists and dicts with string keys, nothing else. Such values
can be sent as JSON and compared without running any code of the submission. Tuples
become lists; numpy and torch scalars become Python numbers.

Released notebooks call `check(...)` in the cell after each question: it runs the
question's visible checks (their expected answers written in by `llmperf release`)
and prints what happened. The submission's process imports this module too, so it
imports nothing but the standard library.
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any

MAX_DEPTH = 20
ARGUMENT_LIMIT = 400  # characters of one argument shown in a check's call
NOT_ANSWERED = "not answered yet (it raises NotImplementedError)"


# ---- plain data ---------------------------------------------------------------------------------
class NotPlainData(TypeError):
    """A value that is not a number, string, bool, None, list or dict."""


def to_plain(value: Any, _depth: int = 0) -> Any:
    """`value` as plain data, or NotPlainData saying what was found instead."""
    if _depth > MAX_DEPTH:
        raise NotPlainData("the value is nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if _is_scalar_array(value):
        return to_plain(value.item(), _depth + 1)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotPlainData("a dict's keys must be strings")
        return {k: to_plain(v, _depth + 1) for k, v in value.items()}
    raise NotPlainData(f"a value of type {type(value).__name__}; return a number, string, "
                       "bool, None, list or dict instead")


def _is_scalar_array(value: Any) -> bool:
    """numpy and torch scalars (and 0-d arrays) have .item() and an empty shape."""
    return callable(getattr(value, "item", None)) and getattr(value, "shape", None) == ()


def to_source(value: Any) -> str:
    """Python source text for plain `value`, with large and small floats in e-notation."""
    if isinstance(value, float):
        return _float_source(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_source(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {to_source(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _float_source(x: float) -> str:
    if not math.isfinite(x):
        return f"float({str(x)!r})"
    if x == 0 or 1e-4 <= abs(x) < 1e6:
        return repr(x)
    for digits in range(17):
        text = f"{x:.{digits}e}"
        if float(text) == x:
            mantissa, exponent = text.split("e")
            return f"{mantissa}e{int(exponent)}"
    return repr(x)


def short(value: Any, limit: int = 80) -> str:
    """A one-line rendering of plain `value` for messages."""
    text = to_source(value) if not isinstance(value, float) else f"{value:.10g}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def whole(value: Any, limit: int = ARGUMENT_LIMIT) -> str:
    """Plain `value` as source text, whole; a list or dict too long for `limit` characters
    keeps its first items whole and says how many there are, never cutting one in two."""
    text = to_source(value)
    if len(text) <= limit or not isinstance(value, (list, dict)) or not value:
        return text
    items = [to_source(v) for v in value] if isinstance(value, list) else \
        [f"{k!r}: {to_source(v)}" for k, v in value.items()]
    kept: list[str] = []
    for item in items:
        if len(", ".join(kept + [item])) > limit - 30:
            break
        kept.append(item)
    opening, closing = "[]" if isinstance(value, list) else "{}"
    return f"{opening}{', '.join(kept + ['...'])}{closing} ({len(items)} items)"


# ---- comparing ----------------------------------------------------------------------------------
def mismatch(expected: Any, got: Any, rel: float = 1e-6, abs_tol: float = 0.0,
             where: str = "") -> str | None:
    """None when `got` matches `expected`, else a sentence saying how it differs.

    Numbers match within the relative tolerance `rel` or the absolute one `abs_tol`,
    except that an integer answer to an integer question (a count of blocks, bytes or
    parameters) must be exact: off by one is wrong however large the count. Strings match
    ignoring case and surrounding spaces; lists and dicts match element by element.
    """
    at = f" at {where}" if where else ""
    if isinstance(expected, bool) or expected is None:
        return None if got is expected else f"expected {short(expected)}, got {short(got)}{at}"
    if isinstance(expected, (int, float)):
        return _number_mismatch(expected, got, rel, abs_tol, at)
    if isinstance(expected, str):
        if isinstance(got, str) and got.strip().lower() == expected.strip().lower():
            return None
        return f"expected {expected!r}, got {short(got)}{at}"
    if isinstance(expected, list):
        return _list_mismatch(expected, got, rel, abs_tol, where)
    if isinstance(expected, dict):
        return _dict_mismatch(expected, got, rel, abs_tol, where)
    raise TypeError(f"expected value of type {type(expected).__name__} is not plain data")


def _number_mismatch(expected, got, rel, abs_tol, at):
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected the number {short(expected)}, got {short(got)}{at}"
    if _is_count(expected) and _is_count(got):
        how = applied_tolerance(expected, got, rel, abs_tol)
        return None if got == expected else f"expected {expected}, got {got}{at} ({how})"
    if math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol):
        return None
    return f"expected {short(expected)}, got {short(got)}{at} ({tolerance_text(rel, abs_tol)})"


def _list_mismatch(expected, got, rel, abs_tol, where):
    if not isinstance(got, list):
        return f"expected a list (or tuple) of {len(expected)}, got {short(got)}"
    if len(got) != len(expected):
        return f"expected {len(expected)} items, got {len(got)}: {short(got)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        reason = mismatch(e, g, rel, abs_tol, f"{where}[{i}]" if where else f"item {i}")
        if reason:
            return reason
    return None


def _dict_mismatch(expected, got, rel, abs_tol, where):
    if not isinstance(got, dict):
        return f"expected a dict with keys {sorted(expected)}, got {short(got)}"
    if set(got) != set(expected):
        return f"expected the keys {sorted(expected)}, got {sorted(got)}"
    for key, e in expected.items():
        at = f"{where}[{key!r}]" if where else f"key {key!r}"
        reason = mismatch(e, got[key], rel, abs_tol, at)
        if reason:
            return reason
    return None


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def applied_tolerance(expected: Any, got: Any, rel: float, abs_tol: float) -> str:
    """The tolerance a number was compared with, in words: none for an integer count."""
    if _is_count(expected) and _is_count(got):
        return "an integer count: no tolerance"
    return tolerance_text(rel, abs_tol)


def tolerance_text(rel: float, abs_tol: float) -> str:
    parts = [f"relative tolerance {rel:g}"] if rel else []
    parts += [f"absolute tolerance {abs_tol:g}"] if abs_tol else []
    return ", ".join(parts) or "exact"


# ---- feedback in the notebook -------------------------------------------------------------------
def points_text(points: float) -> str:
    return f"{points:g} point{'s' * (points != 1)}"


def call_text(name: str, args: list, kwargs: dict) -> str:
    """The call as the student would write it, each argument whole (see `whole`)."""
    parts = [whole(a) for a in args] + [f"{k}={whole(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# ---- the form of a value: what a value question's check cell may say without the answer --------
def form(value: Any) -> Any:
    """The form of plain `value`, as plain data: "number", "string", "bool" or "None" for
    a scalar, a list of the items' forms, a dict of the values' forms."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return [form(v) for v in value]
    return {k: form(v) for k, v in value.items()}


def form_text(shape: Any) -> str:
    """The form in words: "a number", "a list of 2 items", "a dict with keys ['a', 'b']"."""
    if isinstance(shape, list):
        return f"a list of {len(shape)} item{'s' * (len(shape) != 1)}"
    if isinstance(shape, dict):
        return f"a dict with the keys {sorted(shape)}"
    return {"None": "None", "bool": "True or False", "number": "a number",
            "string": "a string"}[shape]


def form_mismatch(shape: Any, got: Any) -> str | None:
    """None when plain `got` has the form `shape` (lists and dicts all the way down)."""
    if isinstance(shape, list):
        same = isinstance(got, list) and len(got) == len(shape) and all(
            form_mismatch(s, g) is None for s, g in zip(shape, got))
    elif isinstance(shape, dict):
        same = isinstance(got, dict) and set(got) == set(shape) and all(
            form_mismatch(s, got[k]) is None for k, s in shape.items())
    else:
        same = form(got) == shape
    return None if same else f"expected {form_text(shape)}, got {short(got)}"


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
          rel: float = 1e-6, abs: float = 0.0, value: bool = False, shape: Any = None,
          forbid: list | None = None, on_forbidden: str = "report") -> bool:
    """Run the visible checks of question `name` against the notebook's own definition.

    cases: dicts with "args", "kwargs" and "expect". Prints PASS or FAIL per check
    and returns True when all pass. The definition is looked up in the globals of
    the cell that calls `check`. A value question (`value=True`) has no visible check
    of its value: the cell checks its form (`shape`, see `form`) and says that the
    grader checks the value; it returns False only when the form is wrong. forbid: the
    library functions the answer must not call, which the grader reports.
    """
    namespace = sys._getframe(1).f_globals
    header = f"{name}" + (f" ({points_text(points)})" if points else "")
    print(header)
    if forbid:
        cost = "the checks that call one fail" if on_forbidden == "fail" else "the score stands"
        print(f"  NOTE  do not call {', '.join(forbid)} in this answer: the grader reports "
              f"such calls ({cost})")
    if name not in namespace:
        print(f"  FAIL  {name} is not defined: run the cell that defines it first")
        return False
    obj = namespace[name]
    if value:
        return _check_value(name, obj, shape)
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


def _check_value(name: str, obj: Any, shape: Any) -> bool:
    try:
        got = to_plain(obj)
    except NotPlainData as err:
        print(f"  FAIL  {name} holds {err}")
        return False
    reason = form_mismatch(shape, got) if shape is not None else None
    if reason:
        print(f"  FAIL  {name} = {short(got)}: {reason}")
        return False
    as_asked = f", {form_text(shape)} as asked" if shape is not None else ""
    print(f"  ----  {name} = {short(got)}{as_asked}. NOT CHECKED: this cell cannot tell "
          "whether the value is right; the grader checks it when grading.")
    return True
