"""Choosing the isolation: the strongest mode that runs a notebook here, or the one asked for.

Each mode is tried on a one-cell notebook through the sandbox (`sandbox.run_submission`),
at every call: the caller keeps the choice and passes its isolation along.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .box import CHOICES, Isolation, Limits, candidates, sandbox_ids
from .sandbox import run_submission

PROBE = [(0, "import llmperf")]  # the notebook a mode must run to be chosen


# ---- choosing the isolation ---------------------------------------------------------------------
class IsolationError(RuntimeError):
    """The isolation asked for is not available here."""


@dataclass(frozen=True)
class Choice:
    """The isolation chosen, and the stronger modes that were tried first and refused, with why."""

    isolation: Isolation
    refused: dict[str, str] = field(default_factory=dict)


def choose_isolation(requested: str = "auto") -> Choice:
    """The isolation to use: `requested`, or with "auto" the strongest that works here.

    IsolationError if none works (or the one requested does not).
    """
    if requested not in CHOICES:
        raise ValueError(f"isolation must be one of {CHOICES}, got {requested!r}")
    modes = candidates(os.geteuid()) if requested == "auto" else (requested,)
    refused: dict[str, str] = {}
    for mode in modes:
        isolation, why = probe(mode)
        if isolation is not None:
            return Choice(isolation, refused)
        refused[mode] = why
    reasons = "; ".join(f"{m}: {why}" for m, why in refused.items())
    raise IsolationError(f"no isolation {'' if requested == 'auto' else requested + ' '}"
                         f"available: {reasons}")


def probe(mode: str) -> tuple[Isolation | None, str]:
    """(the isolation, "") if `mode` runs a notebook here, else (None, why not)."""
    if mode in ("user", "user+namespaces"):
        if os.geteuid() != 0:
            return None, "needs root: the submission runs as another user (nobody)"
        try:
            uid, gid = sandbox_ids()
        except KeyError:
            return None, "no user nobody"
        isolation = Isolation(mode, uid, gid)
    else:
        isolation = Isolation(mode)
    try:
        run = run_submission(PROBE, [], Limits(), isolation)
    except OSError as err:  # e.g. the sandbox user does not exist in this user namespace
        return None, f"{type(err).__name__}: {err}"
    if run.finished and not run.cell_errors and not run.survivors:
        return isolation, ""
    return None, run.setup_error or next(iter(run.cell_errors.values()), "it did not start")
