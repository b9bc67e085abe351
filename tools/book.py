"""Build the book's site with Jupyter Book: _build/html/index.html.

1. Stage the site's sources in <output>/src: the configuration and pages in book/, every
   chapter as an executed notebook (run afresh from its .py source, or, with --no-execute, the
   committed .ipynb), each chapter's .py beside it, the students' exercise notebooks that
   `llmperf release` writes from exercises/NN_topic.py (never the instructor sources), the
   Gradescope templates and the benchmarks' README and results. The committed notebooks are
   never touched.
2. Count what the pages quote: each exercise set's questions and points (from the released
   notebooks' metadata), each chapter's learning goals, words and run time. They reach the
   pages as MyST substitutions, e.g. {{ exercise_sets_table }} or {{ points_04 }}.
3. Build the site from there with Sphinx through Jupyter Book's configuration, execution off,
   into <output>/html. Every warning is printed and kept in <output>/warnings.txt, which
   tests/test_book_site.py requires to be empty; --strict makes a warning fail the build.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOT_STAGED = {"CONVENTIONS.md", "__pycache__"}
# Planning figures for the syllabus: reading speed for technical prose with maths, and the time
# a student spends on one point of an exercise set. Both are stated on the syllabus page.
READING_WORDS_PER_MINUTE = 120
EXERCISE_MINUTES_PER_POINT = 10


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


def exercise_sources() -> list[Path]:
    """The instructor sources, solutions included: released for the site, never staged."""
    return sorted((ROOT / "exercises").glob("[0-9][0-9]_*.py"))


def release_exercises(target: Path) -> None:
    """Write each exercise's student notebook (.ipynb and .py) into target: `llmperf release`."""
    sources = [str(p) for p in exercise_sources()]
    if not sources:
        return
    run = subprocess.run([sys.executable, "-m", "llmperf.cli", "release", *sources,
                          "--output", str(target)], cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"llmperf release failed:\n{run.stdout}{run.stderr}")


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
    # The students' notebooks, one page each; the instructor sources stay out of the site.
    release_exercises(src / "exercises")
    shutil.copytree(ROOT / "exercises" / "gradescope", src / "instructors" / "gradescope",
                    ignore=lambda folder, names: NOT_STAGED & set(names))
    (src / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy2(ROOT / "benchmarks" / "README.md", src / "benchmarks" / "README.md")
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        shutil.copy2(result, src / "benchmarks" / "results" / result.name)


@dataclass
class ExerciseSet:
    """One released exercise notebook, as its metadata and first heading describe it."""

    name: str        # 04_boundedness
    title: str       # the notebook's heading without "Exercises 4: "
    questions: int
    points: float


@dataclass
class ChapterFacts:
    """What the syllabus quotes of a chapter."""

    name: str          # 04_boundedness
    number: int
    title: str         # the heading without "Chapter 4: "
    goals: str         # the "After this chapter you will be able to" list, as Markdown
    words: int         # words of its Markdown cells
    run_s: float | None  # seconds its code cells took when the notebook was executed


def exercise_sets(folder: Path) -> list[ExerciseSet]:
    """The released notebooks in folder, in file-name order."""
    sets = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        meta = nb["metadata"]["llmperf"]
        first = next(("".join(c["source"]) for c in nb["cells"]
                      if c["cell_type"] == "markdown"), "")
        heading = re.search(r"^# (.+)$", first, re.M)
        title = (re.sub(r"^Exercises (?:for chapter )?\d+:\s*", "", heading.group(1))
                 if heading else meta["exercise"])
        sets.append(ExerciseSet(meta["exercise"], title[:1].upper() + title[1:],
                                len(meta["questions"]), float(meta["max_score"])))
    return sets


def _markdown_text(cells: list[dict]) -> str:
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def _run_seconds(cells: list[dict]) -> float | None:
    """Sum of the code cells' execution times that nbclient recorded, if it did."""
    total, timed = 0.0, False
    for cell in cells:
        times = cell.get("metadata", {}).get("execution", {})
        start, end = times.get("iopub.execute_input"), times.get("shell.execute_reply")
        if cell["cell_type"] == "code" and start and end:
            parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
            total += (parse(end) - parse(start)).total_seconds()
            timed = True
    return total if timed else None


def chapter_facts(folder: Path) -> list[ChapterFacts]:
    """Learning goals, words and run time of each staged chapter notebook."""
    facts = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = _markdown_text(cells)
        heading = re.search(r"^# (.+)$", text, re.M)
        title = re.sub(r"^Chapter \d+:\s*", "", heading.group(1)) if heading else path.stem
        goals = re.search(r"^:::\{admonition\} After this chapter you will be able to\n"
                          r"(?::class:[^\n]*\n)?\n?(.*?)^:::", text, re.M | re.S)
        # References and bibliography directives are not reading.
        body = re.split(r"^## References", text, flags=re.M)[0]
        facts.append(ChapterFacts(path.stem, int(path.stem[:2]), title,
                                  goals.group(1).strip() if goals else "",
                                  len(re.findall(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*", body)),
                                  _run_seconds(cells)))
    return facts


def _points(value: float) -> str:
    return f"{value:g}"


def _minutes(seconds: float) -> int:
    """Minutes, rounded up to the next 5."""
    return max(5, -(-int(round(seconds / 60)) // 5) * 5)


def _duration(seconds: float) -> str:
    """Seconds under a minute and a half, else whole minutes."""
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{math.ceil(seconds / 60)} min"


def substitutions(sets: list[ExerciseSet], chapters: list[ChapterFacts]) -> dict[str, str]:
    """The values that the pages quote as {{ name }}; absolute paths, so any page may use them."""
    subs: dict[str, str] = {}
    by_name = {c.name: c for c in chapters}
    rows = ["| chapter | exercise set | questions | points | download |",
            "|---|---|---:|---:|---|"]
    for s in sets:
        number = int(s.name[:2])
        chapter = (f"{{doc}}`{number} </chapters/{s.name}>`" if s.name in by_name
                   else str(number))
        downloads = (f"{{download}}`.ipynb </exercises/{s.name}.ipynb>` "
                     f"{{download}}`.py </exercises/{s.name}.py>`")
        rows.append(f"| {chapter} | {{doc}}`{s.title} </exercises/{s.name}>` | {s.questions} "
                    f"| {_points(s.points)} | {downloads} |")
        subs[f"questions_{s.name[:2]}"] = str(s.questions)
        subs[f"points_{s.name[:2]}"] = _points(s.points)
        subs[f"exercise_{s.name[:2]}"] = (
            f"{{doc}}`Exercises {number} </exercises/{s.name}>`: {s.questions} questions, "
            f"{_points(s.points)} points")
    total_q, total_p = sum(s.questions for s in sets), sum(s.points for s in sets)
    rows.append(f"| **all** | **{len(sets)} sets** | **{total_q}** | **{_points(total_p)}** | |")
    subs["exercise_sets_table"] = "\n".join(rows)
    subs["exercise_set_count"] = str(len(sets))
    subs["exercise_total_questions"] = str(total_q)
    subs["exercise_total_points"] = _points(total_p)

    points = {int(s.name[:2]): s.points for s in sets}
    rows = ["| chapter | words | reading | running the cells | exercise points | exercises |"
            " total |", "|---|---:|---:|---:|---:|---:|---:|"]
    total_min = 0
    for c in chapters:
        reading = _minutes(60 * c.words / READING_WORDS_PER_MINUTE)
        running = max(1, math.ceil(c.run_s / 60)) if c.run_s is not None else 0
        exercise = _minutes(60 * EXERCISE_MINUTES_PER_POINT * points[c.number]) \
            if c.number in points else 0
        minutes = reading + running + exercise
        total_min += minutes
        subs[f"goals_{c.number:02d}"] = c.goals
        subs[f"reading_{c.number:02d}"] = f"{reading} min"
        shown = "unknown" if c.run_s is None else _duration(c.run_s)
        subs[f"running_{c.number:02d}"] = shown
        subs[f"hours_{c.number:02d}"] = f"{minutes / 60:.1f} h"
        rows.append(f"| {{doc}}`{c.number} </chapters/{c.name}>` | {c.words:,} "
                    f"| {reading} min | {shown} "
                    f"| {_points(points[c.number]) if c.number in points else '–'} "
                    f"| {f'{exercise} min' if exercise else '–'} | {minutes / 60:.1f} h |")
    rows.append(f"| **all** | **{sum(c.words for c in chapters):,}** | | | "
                f"**{_points(total_p)}** | | **{total_min / 60:.0f} h** |")
    subs["syllabus_time_table"] = "\n".join(rows)
    subs["reading_words_per_minute"] = str(READING_WORDS_PER_MINUTE)
    subs["exercise_minutes_per_point"] = str(EXERCISE_MINUTES_PER_POINT)
    return subs


def build_site(src: Path, html: Path, doctrees: Path, strict: bool, quiet: bool,
               subs: dict[str, str] | None = None) -> list[str]:
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
    sphinx_config["myst_substitutions"] = {**sphinx_config.get("myst_substitutions", {}),
                                           **(subs or {})}
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
    _give_redirect_a_head(html)
    return [line for line in plain.splitlines() if line.strip()]


def _give_redirect_a_head(html: Path) -> None:
    """index.html forwards to the landing page; with a favicon link the browser asks for no
    /favicon.ico (a 404 on a static server), and with a title it reads as a page."""
    index = html / "index.html"
    if not index.exists():
        return
    text = index.read_text(encoding="utf-8")
    target = re.search(r'url=([^"]+)"', text)
    if text.lstrip().startswith("<!DOCTYPE") or target is None:
        return
    index.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<title>Performance of Transformers</title>\n"
        '<link rel="icon" href="_static/favicon.svg" type="image/svg+xml">\n'
        f'<meta http-equiv="Refresh" content="0; url={target.group(1)}" />\n'
        f'</head><body><a href="{target.group(1)}">Performance of Transformers</a></body></html>\n',
        encoding="utf-8")


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
    subs = substitutions(exercise_sets(src / "exercises"), chapter_facts(src / "chapters"))
    start = time.perf_counter()
    found = build_site(src, html, output / "doctrees", args.strict, quiet=not args.verbose,
                       subs=subs)
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
