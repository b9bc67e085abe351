"""Plain data: what may cross from a submission's process to the grader's.

Numbers, strings, booleans, None, lists and dicts with string keys, nothing else:
such values can be sent as JSON and compared without running any code of the
submission. Tuples become lists; numpy and torch scalars become Python numbers.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

MAX_DEPTH = 20


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
