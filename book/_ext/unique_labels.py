"""Bibliography labels that are the same in every chapter: the "unique_alpha" style.

Each chapter lists only the sources it cites (a filtered {bibliography}). pybtex's alpha
labels add "a", "b" only among the entries of one list, so two NVIDIA documents of 2021 are
"NVIDIA21" in two chapters that cite one each, and Sphinx warns of a duplicate label. This
style assigns the letters once, over every entry of the book's .bib files (ordered by key),
so a source carries one label everywhere and no two sources share one.
"""
from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

from pybtex.database import parse_file
from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabels
from sphinx.application import Sphinx

_BIB_FILES: list[Path] = []


@cache
def _global_labels() -> dict[str, str]:
    """Key -> label over every entry of the book's bibliography files."""
    entries = {}
    for path in _BIB_FILES:
        entries.update(parse_file(str(path)).entries)
    keys = sorted(entries)
    base = {key: AlphaLabels().format_label(entries[key]) for key in keys}
    count, seen, labels = Counter(base.values()), Counter(), {}
    for key in keys:
        label = base[key]
        if count[label] > 1:
            labels[key] = label + chr(ord("a") + seen[label])
            seen[label] += 1
        else:
            labels[key] = label
    return labels


class UniqueAlphaLabels(AlphaLabels):
    def format_labels(self, sorted_entries):
        labels = _global_labels()
        for entry in sorted_entries:
            yield labels.get(entry.key) or self.format_label(entry)


class UniqueAlphaStyle(AlphaStyle):
    default_label_style = "unique_alpha"


def _remember_bib_files(app: Sphinx, config) -> None:
    _BIB_FILES[:] = [Path(app.srcdir) / name for name in config.bibtex_bibfiles]
    _global_labels.cache_clear()


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.labels", "unique_alpha", UniqueAlphaLabels)
    register_plugin("pybtex.style.formatting", "unique_alpha", UniqueAlphaStyle)
    app.connect("config-inited", _remember_bib_files)
    return {"parallel_read_safe": True}
