"""Name lookup shared by the accelerator and model catalogs: forgiving about case,
spaces and punctuation, helpful when a name is unknown, and strict when a name
could mean more than one entry."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def name_key(name: str) -> str:
    """'H100-SXM', 'h100 sxm' and 'H100_SXM' all become 'h100sxm'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def build_index(entries: Iterable[tuple[str, T]]) -> dict[str, tuple[T, ...]]:
    """Map the key of every (label, entry) pair to the entries that carry that label.

    A label given to several entries (an alias such as "A100" for both memory sizes)
    maps to all of them, and looking it up asks the caller to choose.
    """
    index: dict[str, list[T]] = {}
    for label, entry in entries:
        found = index.setdefault(name_key(label), [])
        if not any(entry is other for other in found):
            found.append(entry)
    return {key: tuple(found) for key, found in index.items()}


def _label(entry: object, key: str) -> str:
    return getattr(entry, "name", key)


def lookup(kind: str, name: object, index: Mapping[str, tuple[T, ...]], known: list[str]) -> T:
    """The one entry called `name`.

    ValueError naming `kind` when the name is unknown (with the closest names, most
    similar first, and all names) or ambiguous (with the entries it could mean).
    """
    if not isinstance(name, str):
        raise ValueError(f"{kind} must be a name or a catalog object, got {name!r}")
    found = index.get(name_key(name))
    if found is None:
        # get_close_matches puts the most similar first: keep that order, each name once
        close = difflib.get_close_matches(name_key(name), list(index), n=3, cutoff=0.4)
        names = list(dict.fromkeys(_label(entry, key) for key in close for entry in index[key]))
        hint = f" Closest: {names}." if names else ""
        raise ValueError(f"{kind} {name!r} is not in the catalog.{hint} Known: {known}")
    if len(found) > 1:
        names = [_label(entry, name) for entry in found]
        raise ValueError(f"{kind} {name!r} is ambiguous: it could be any of {names}; "
                         "give one of those names")
    return found[0]
