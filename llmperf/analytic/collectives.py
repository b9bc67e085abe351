"""Collective communication under the alpha-beta model, and fitting its two constants.

One message of n bytes over a link costs alpha + n / B: alpha is the link's `latency_s`,
B its one-way bandwidth (`Link.one_way`). Ring algorithms over p ranks proceed in steps;
in each step every rank sends one piece to its neighbour while receiving another, so a
step costs alpha + (piece bytes) / B (Thakur, Rabenseifner and Gropp, "Optimization of
Collective Communication Operations in MPICH", IJHPCA 2005; Patarasuk and Yuan,
"Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 2009).

With m the whole tensor (what each rank holds before an all-reduce or after an
all-gather; for an all-to-all, what each rank holds before the exchange):

    op               steps       piece    time
    all_reduce       2 (p - 1)   m / p    2 (p - 1) (alpha + m / (p B))
    all_gather       p - 1       m / p    (p - 1) (alpha + m / (p B))
    reduce_scatter   p - 1       m / p    (p - 1) (alpha + m / (p B))
    all_to_all       p - 1       m / p    (p - 1) (alpha + m / (p B))
    send             1           m        alpha + m / B

(an all-reduce is a reduce-scatter, then an all-gather; an all-to-all visits one peer at
a time)

and p = 1 costs nothing. The model leaves out what a library adds per call (NCCL's own
cost model charges a fixed few microseconds per collective: see `llmperf.hardware.LINKS`),
contention, and the reduction's arithmetic.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..hardware import Link, get_link
from ..units import check_non_negative, check_positive

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send")


def _check_op(op: str) -> None:
    if op not in COLLECTIVES:
        raise ValueError(f"op must be one of {COLLECTIVES}, got {op!r}")


def collective_steps(op: str, world_size: int) -> int:
    """Messages each rank sends one after another: 2 (p - 1) for an all-reduce, p - 1 for
    all-gather, reduce-scatter and all-to-all, 1 for a send; 0 when p = 1."""
    _check_op(op)
    check_positive("world_size", world_size, integer=True)
    p = int(world_size)
    if p == 1:
        return 0
    if op == "send":
        return 1
    return 2 * (p - 1) if op == "all_reduce" else p - 1


def bytes_sent_per_rank(op: str, message_bytes: float, world_size: int) -> float:
    """Bytes each rank sends in `op` on a tensor of `message_bytes`: steps times the piece
    (m / p for the ring collectives, the whole m for a send)."""
    check_non_negative("message_bytes", message_bytes)
    steps = collective_steps(op, world_size)
    piece = message_bytes if op == "send" else message_bytes / world_size
    return steps * piece


def collective_time(op: str, message_bytes: float, world_size: int,
                    link: Link | str) -> float:
    """Seconds of `op` on a tensor of `message_bytes` over `world_size` ranks joined by
    `link` (a `Link` or a catalog name): steps * alpha + bytes sent per rank / B, the
    module docstring's table, with alpha = link.latency_s and B = link.one_way."""
    link = _as_link(link)
    latency_s = collective_steps(op, world_size) * link.latency_s
    return latency_s + bytes_sent_per_rank(op, message_bytes, world_size) / link.one_way


def _as_link(link: Link | str) -> Link:
    if isinstance(link, (Link, str)):
        return get_link(link)
    raise ValueError(f"link must be a llmperf.Link or a catalog link name, got {link!r}")


def fit_alpha_beta(message_bytes: Sequence[float], seconds: Sequence[float], op: str,
                   world_size: int, name: str = "fitted") -> Link:
    """The `Link` whose `collective_time(op, m, world_size, link)` best fits measured times.

    Least squares on the relative error, sum(((model - t) / t)^2), so a 4-byte message
    counts as much as a 64 MB one (their times span decades): the small messages fix
    alpha, the large ones B. The model is linear in alpha and 1 / B:
    t = steps * alpha + bytes_sent_per_rank / B. Returns a Link with latency_s = alpha
    and bandwidth = 2 B (both directions, as `Link` counts it; `one_way` is B).
    ValueError if the sizes do not vary, a time is not positive, or the fit gives a
    negative alpha or a bandwidth that is not positive (measure more sizes, or repeat
    the timings, rather than trust it).
    """
    sizes = np.asarray(message_bytes, dtype=float)
    times = np.asarray(seconds, dtype=float)
    if sizes.ndim != 1 or sizes.shape != times.shape or sizes.size < 2:
        raise ValueError("message_bytes and seconds must be 1-D sequences of the same length, "
                         "with at least 2 measurements")
    if not (np.all(np.isfinite(sizes)) and np.all(sizes >= 0)):
        raise ValueError("message_bytes must hold finite numbers >= 0")
    if not (np.all(np.isfinite(times)) and np.all(times > 0)):
        raise ValueError("seconds must hold finite positive numbers")
    steps = collective_steps(op, world_size)
    if steps == 0:
        raise ValueError("world_size must be >= 2 to fit: a collective over one rank costs 0")
    sent = np.array([bytes_sent_per_rank(op, m, world_size) for m in sizes])
    if np.ptp(sent) == 0:
        raise ValueError("message_bytes must take at least 2 different sizes to separate "
                         "alpha from the bandwidth")
    design = np.column_stack([np.full_like(sent, steps), sent]) / times[:, None]
    (alpha, inverse_b), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    if alpha < -1e-12 * float(np.max(times)) or inverse_b <= 0:
        raise ValueError(f"the least-squares fit gives alpha = {alpha:.3g} s and 1/B = "
                         f"{inverse_b:.3g} s/B, not a link: measure more sizes or repeat "
                         "the timings")
    return Link(name, bandwidth=2 / inverse_b, latency_s=max(float(alpha), 0.0),
                source=f"least-squares fit of collective_time({op!r}, ..., {world_size}) "
                       f"to {sizes.size} measured times")
