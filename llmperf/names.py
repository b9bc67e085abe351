"""Name lookup shared by the accelerator and model catalogs: forgiving about case,
spaces and punctuation, and helpful when a name is unknown."""
from __future__ import annotations

import difflib
import re
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def name_key(name: str) -> str:
    """'H100-SXM', 'h100 sxm' and 'H100_SXM' all become 'h100sxm'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def build_index(entries: Iterable[tuple[str, T]]) -> dict[str, T]:
    """Map the key of every (label, entry) pair to its entry."""
    return {name_key(label): entry for label, entry in entries}


def lookup(kind: str, name: object, index: Mapping[str, T], known: list[str]) -> T:
    """The entry called `name`, or a ValueError naming `kind`, the closest names and all names."""
    if not isinstance(name, str):
        raise ValueError(f"{kind} must be a name or a catalog object, got {name!r}")
    found = index.get(name_key(name))
    if found is None:
        close = difflib.get_close_matches(name_key(name), list(index), n=3, cutoff=0.4)
        names = sorted({getattr(index[c], "name", c) for c in close})
        hint = f" Closest: {names}." if names else ""
        raise ValueError(f"{kind} {name!r} is not in the catalog.{hint} Known: {known}")
    return found
