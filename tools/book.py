"""Build the book's site with Jupyter Book: _build/html/index.html.

1. Stage the site's sources in <output>/src: the configuration in book/, every chapter as an
   executed notebook (run afresh from its .py source, or, with --no-execute, the committed
   .ipynb), each chapter's .py beside it, the exercises' README and the benchmarks' README
   and results. The committed notebooks are never touched.
2. Build the site from there with Sphinx through Jupyter Book's configuration, execution off,
   into <output>/html. Every warning is printed and kept in <output>/warnings.txt, which
   tests/test_book_site.py requires to be empty; --strict makes a warning fail the build.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOT_STAGED = {"CONVENTIONS.md", "__pycache__"}


class _Tee(io.TextIOBase):
    """A stream that writes to a terminal stream and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text) if self.stream is not None else len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


def chapter_sources() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


def stage(src: Path, execute: bool) -> None:
    """Assemble the site's source folder."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK, src, ignore=lambda folder, names: NOT_STAGED & set(names))
    chapters = src / "chapters"
    chapters.mkdir()
    if execute:
        import nbformat
        from nbclient.exceptions import CellExecutionError
        from notebooks import execute as run_notebook
        from notebooks import read_source
    for py in chapter_sources():
        shutil.copy2(py, chapters / py.name)
        target = chapters / f"{py.stem}.ipynb"
        if execute:
            start = time.perf_counter()
            try:
                nb = run_notebook(read_source(py), cwd=py.parent)
            except CellExecutionError as error:
                raise SystemExit(f"{py.relative_to(ROOT)} failed to execute:\n{error}") from None
            nbformat.write(nb, target)
            print(f"executed {py.relative_to(ROOT)} in {time.perf_counter() - start:.1f} s",
                  flush=True)
        else:
            shutil.copy2(py.with_suffix(".ipynb"), target)
    (src / "exercises").mkdir()
    shutil.copy2(ROOT / "exercises" / "README.md", src / "exercises" / "README.md")
    shutil.copytree(ROOT / "exercises" / "gradescope", src / "exercises" / "gradescope")
    (src / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy2(ROOT / "benchmarks" / "README.md", src / "benchmarks" / "README.md")
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        shutil.copy2(result, src / "benchmarks" / "results" / result.name)


def build_site(src: Path, html: Path, doctrees: Path, strict: bool, quiet: bool) -> list[str]:
    """Run Sphinx with Jupyter Book's configuration; return the warnings it printed."""
    from jupyter_book.config import get_final_config
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    sphinx_config, _ = get_final_config(
        user_yaml=src / "_config.yml", cli_config={"latex_individualpages": False},
        sourcedir=src, use_external_toc=True)
    # Thebe (live code from a remote kernel) would name a CDN script on every page; the book
    # runs its code in JupyterLab instead.
    sphinx_config["extensions"] = [e for e in sphinx_config["extensions"] if e != "sphinx_thebe"]
    warning_stream = _Tee(sys.stderr)
    if html.exists():
        shutil.rmtree(html)
    with warnings.catch_warnings(), patch_docutils(str(src)), docutils_namespace():
        warnings.simplefilter("ignore", DeprecationWarning)
        app = Sphinx(srcdir=str(src), confdir=None, outdir=str(html),
                     doctreedir=str(doctrees), buildername="html", confoverrides=sphinx_config,
                     status=None if quiet else sys.stdout, warning=warning_stream,
                     freshenv=True, warningiserror=strict, keep_going=True)
        app.build()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", warning_stream.kept.getvalue())
    return [line for line in plain.splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "_build")
    parser.add_argument("--no-execute", dest="execute", action="store_false",
                        help="use the committed .ipynb outputs instead of executing the chapters")
    parser.add_argument("--strict", action="store_true", help="fail on any build warning")
    parser.add_argument("--verbose", action="store_true", help="print Sphinx's progress")
    args = parser.parse_args()
    output = args.output.resolve()
    src, html = output / "src", output / "html"
    # Kernels talk to this process over the loopback interface; their transport notice is noise.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    stage(src, args.execute)
    start = time.perf_counter()
    found = build_site(src, html, output / "doctrees", args.strict, quiet=not args.verbose)
    (output / "warnings.txt").write_text("".join(f"{w}\n" for w in found), encoding="utf-8")
    pages = len(list(html.rglob("*.html")))
    shown = html.relative_to(Path.cwd()) if html.is_relative_to(Path.cwd()) else html
    print(f"built {pages} pages in {time.perf_counter() - start:.1f} s: {shown / 'index.html'}")
    print(f"serve it with: python -m http.server -d {shown}  (then open http://localhost:8000)")
    if found:
        print(f"{len(found)} warning lines, kept in {output / 'warnings.txt'}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
