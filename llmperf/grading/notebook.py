"""Reading exercise notebooks (.ipynb, or .py in jupytext's percent format)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

METADATA_KEY = "llmperf"  # notebook metadata: {"llmperf": {"exercise": "04_boundedness", ...}}
SUFFIXES = (".ipynb", ".py")
_MAGIC = re.compile(r"^(\s*)([%!].*)$")


class NotebookError(ValueError):
    """A file that cannot be read as a notebook."""


def read_notebook(path: Path) -> Any:
    """The notebook in `path`; NotebookError with a readable reason if it is not one.

    nbformat and jupytext are imported here, not at the top: the submission's
    process imports this module and should start fast.
    """
    import nbformat

    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise NotebookError(f"{path.name}: expected a .ipynb or .py notebook")
    try:
        if path.suffix == ".py":
            import jupytext  # imported here: only .py files need it

            return jupytext.read(path, fmt="py:percent")
        return nbformat.read(path, as_version=4)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError,
            KeyError, TypeError, ValueError, AttributeError) as err:
        raise NotebookError(f"{path.name} cannot be read as a notebook: {err}") from err


def exercise_name(nb: Any) -> str | None:
    """The exercise a released notebook belongs to, from its metadata."""
    meta = nb.get("metadata", {}).get(METADATA_KEY)
    name = meta.get("exercise") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def code_cells(nb: Any) -> list[tuple[int, str]]:
    """(index in the notebook, source) of each code cell, in order."""
    cells = nb.get("cells")
    cells = cells if isinstance(cells, list) else []
    return [(i, _text(c.get("source", ""))) for i, c in enumerate(cells)
            if isinstance(c, dict) and c.get("cell_type") == "code"]


def _text(source: object) -> str:
    if isinstance(source, list):
        return "".join(str(s) for s in source)
    return source if isinstance(source, str) else ""


def runnable(source: str) -> str:
    """The cell as plain Python: IPython magics and shell escapes are commented out."""
    return "\n".join(_MAGIC.sub(r"\1# \2", line) for line in source.splitlines())


def first_line(source: str, width: int = 50) -> str:
    """The first non-blank line of a cell, to name it in messages."""
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[: width - 3] + "..."
    return "(empty)"


CHECK_MARK = "# Check your answer"  # first line of the check cells that release writes


def is_check_cell(source: str) -> bool:
    return source.lstrip().startswith(CHECK_MARK)
