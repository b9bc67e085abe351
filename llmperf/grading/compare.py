"""Comparing a submission's answer with the expected one, both plain data."""
from __future__ import annotations

import math
from typing import Any

from .plain import short


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
