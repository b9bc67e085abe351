"""Re-execute paired notebooks in place: each .py becomes its .ipynb, run, with outputs."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from notebooks import execute, read_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sources", nargs="+", type=Path, help="paired .py notebooks")
    args = parser.parse_args()
    for py in args.sources:
        start = time.perf_counter()
        nb = execute(read_source(py), cwd=py.parent)
        nbformat.write(nb, py.with_suffix(".ipynb"))
        print(f"{py}: executed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
