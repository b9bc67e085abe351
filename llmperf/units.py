"""Units: bytes per element of each dtype, decimal and binary prefixes, formatters.

Everything in llmperf is in SI base units: seconds, bytes, FLOP, FLOP/s, B/s.
A "GB" is 10**9 bytes (what datasheets mean); a "GiB" is 2**30 bytes (what
`nvidia-smi` and most operating systems print). The two differ by 7.4 %.
"""
from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40

GFLOP = 1e9
TFLOP = 1e12

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp64": 8,
    "fp32": 4,
    "tf32": 4,  # tf32 is stored as fp32; only the tensor-core multiply drops mantissa bits
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
}

_ALIASES = {
    "float64": "fp64", "double": "fp64",
    "float32": "fp32", "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16", "half": "fp16",
    "float8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "e4m3": "fp8", "e5m2": "fp8",
}


def normalize_dtype(dtype: str) -> str:
    """Return the canonical short name of `dtype` ("bfloat16" -> "bf16")."""
    if not isinstance(dtype, str):
        dtype = str(dtype).removeprefix("torch.")
    key = dtype.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BYTES_PER_ELEMENT:
        raise ValueError(
            f"dtype must be one of {sorted(BYTES_PER_ELEMENT)} (or an alias such as "
            f"'float16'), got {dtype!r}"
        )
    return key


def bytes_per_element(dtype: str) -> float:
    """Bytes one element of `dtype` occupies in memory (int4 packs two per byte)."""
    return BYTES_PER_ELEMENT[normalize_dtype(dtype)]


def storage_bytes(elements: int, dtype: str) -> int:
    """Whole bytes that `elements` values of `dtype` occupy when packed densely.

    int4 packs two values per byte, so an odd count rounds up: 3 int4 values take 2 bytes.
    """
    check_non_negative("elements", elements, integer=True)
    return math.ceil(int(elements) * Fraction(bytes_per_element(dtype)))


def _is_finite_number(value: object) -> bool:
    """A real number (Python or numpy, not bool) that is neither NaN nor infinite."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is a finite positive number."""
    if not _is_finite_number(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def check_non_negative(name: str, value: float, *, integer: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is a finite number >= 0."""
    if not _is_finite_number(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _scaled(name: str, value: float, steps: list[tuple[float, str]], unit: str,
            digits: int) -> str:
    check_non_negative(name, value)
    check_non_negative("digits", digits, integer=True)
    for factor, prefix in steps:
        if value >= factor:
            return f"{value / factor:.{digits}f} {prefix}{unit}"
    return f"{value:.{digits}f} {unit}"


_DECIMAL = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
_BINARY = [(2**50, "Pi"), (2**40, "Ti"), (2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")]
_TIME = [(1.0, ""), (1e-3, "m"), (1e-6, "u")]


def format_bytes(n_bytes: float, binary: bool = False, digits: int = 2) -> str:
    """Format a byte count: decimal (GB = 1e9) by default, binary (GiB = 2**30) on request."""
    return _scaled("n_bytes", n_bytes, _BINARY if binary else _DECIMAL, "B", digits)


def format_flops(flops: float, digits: int = 2) -> str:
    """Format a FLOP count (not a rate), e.g. '13.48 GFLOP'."""
    return _scaled("flops", flops, _DECIMAL, "FLOP", digits)


def format_flop_rate(flop_per_s: float, digits: int = 2) -> str:
    """Format a rate in FLOP/s, e.g. '125.00 TFLOP/s'."""
    return _scaled("flop_per_s", flop_per_s, _DECIMAL, "FLOP/s", digits)


def format_bandwidth(bytes_per_s: float, digits: int = 2) -> str:
    """Format a bandwidth in decimal B/s, e.g. '600.00 GB/s'."""
    return _scaled("bytes_per_s", bytes_per_s, _DECIMAL, "B/s", digits)


def format_seconds(seconds: float, digits: int = 2) -> str:
    """Format a duration with the unit that keeps it readable (s, ms, us, ns).

    Every formatter here takes a size, a count, a rate or a duration: NaN, an
    infinity or a negative value is a mistake upstream and raises ValueError.
    """
    check_non_negative("seconds", seconds)
    if 0 < seconds < 1e-6:
        return _scaled("seconds", seconds / 1e-9, [], "ns", digits)
    return _scaled("seconds", seconds, _TIME, "s", digits)
