"""A submission's two halves: when NAME.ipynb and NAME.py are both handed in, which one is graded.

Release writes both, and a student may edit one and leave the other stale beside it. The
rule, for two files of one name in one folder (a folder graded, or both paths given):

1. Compare their code: the code cells of each, check cells left out, trailing spaces and
   blank lines dropped. The same code: the halves agree, and the .ipynb is graded.
2. Different code: the half modified later is graded, when its modification time is at
   least `MTIME_MARGIN_S` (2 s) after the other's. A half that cannot be read as a
   notebook counts as different code.
3. Different code, modified within 2 s of each other (a zip keeps times to 2 s; a paired
   save writes both at once): there is no telling which is newer, and the .ipynb is graded.

In cases 2 and 3 the grade says which half it graded and why, and warns that the other
was not graded; in case 1 it says that both hold the same code.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .notebooks import SUFFIXES, NotebookError, code_cells, is_check_cell, read_notebook

MTIME_MARGIN_S = 2.0


@dataclass(frozen=True)
class Submission:
    """The file to grade, and what to tell the student about the half beside it, if any."""

    path: Path
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


def notebook_files(folder: Path) -> list[Path]:
    """The .ipynb and .py files in `folder` (not its subfolders), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in SUFFIXES)


def pick_halves(paths: Iterable[Path]) -> list[Submission]:
    """One Submission per name: a lone file as it is, two halves by the rule above."""
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for path in map(Path, paths):
        if path.suffix not in SUFFIXES:
            raise ValueError(f"submission {path}: expected a .ipynb or .py notebook")
        groups.setdefault((path.resolve().parent, path.stem), {})[path.suffix] = path
    return [_choose(halves) for _, halves in sorted(groups.items())]


def _choose(halves: dict[str, Path]) -> Submission:
    if len(halves) == 1:
        return Submission(next(iter(halves.values())))
    ipynb, py = halves[".ipynb"], halves[".py"]
    code = {path: code_of(path) for path in (ipynb, py)}
    if code[ipynb] is not None and code[ipynb] == code[py]:
        return Submission(ipynb, (f"graded {ipynb.name}; {py.name} beside it holds the same code",))
    unreadable = "".join(f"; {path.name} cannot be read as a notebook"
                         for path in code if code[path] is None)
    times = {path: path.stat().st_mtime for path in (ipynb, py)}
    newer, older = (py, ipynb) if times[py] > times[ipynb] else (ipynb, py)
    saved = f"{when(times[newer])} against {when(times[older])}"
    if times[newer] - times[older] >= MTIME_MARGIN_S:
        why = (f"graded {newer.name}, not {older.name} beside it: the two hold different code"
               f"{unreadable}, and {newer.name} was modified later ({saved})")
        chosen, other = newer, older
    else:
        why = (f"graded {ipynb.name}, not {py.name} beside it: the two hold different code"
               f"{unreadable}, modified within {MTIME_MARGIN_S:g} s of each other ({saved}), "
               "too close to tell which is newer, so the .ipynb is graded")
        chosen, other = ipynb, py
    warn = (f"warning: {other.name} was not graded; if it holds the answers you meant, "
            f"hand it in alone (or save it again so that it is the newer)")
    return Submission(chosen, (why, warn))


def code_of(path: Path) -> tuple[str, ...] | None:
    """The code a half holds, for comparing halves: None when it is not a readable notebook."""
    try:
        nb = read_notebook(path)
    except NotebookError:
        return None
    cells = ("\n".join(line.rstrip() for line in source.splitlines()).strip()
             for _, source in code_cells(nb) if not is_check_cell(source))
    return tuple(cell for cell in cells if cell)


def when(timestamp: float) -> str:
    """A modification time as the student's clock shows it, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
