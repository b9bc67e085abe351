"""The exercises on the book's site: every student's notebook, and nothing of the instructor's.

`make book` releases each instructor source `exercises/NN_topic.py` with `llmperf release` and
the site offers the result: a page per set and its .ipynb and .py for download. These tests
read the built site (BOOK_SITE, or one built here, as in tests/test_book_site.py) and check
that

- each set has its page, and its downloads are byte for byte what `llmperf release` writes;
- no file of the site, page or download, holds the text of a solution (what stands between
  `### BEGIN SOLUTION` and `### END SOLUTION` in a source) or of a question's `hidden=` or
  `reference=` argument, and no link leads to an instructor source;
- the questions and points the pages quote are those the sources declare;
- the Exercises page speaks to students and the instructors' page to instructors.

No browser is needed.
"""
from __future__ import annotations

import ast
import hashlib
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from test_book_site import ROOT, _parse, built_site, page_files

SOURCES = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.py"))
NAMES = [p.stem for p in SOURCES]
# Files of the site that are not text: never scanned.
BINARY = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2", ".ttf", ".eot",
          ".inv", ".pickle", ".doctree", ".zip"}
MARKER = re.compile(r"^\s*(#\s*)?### (BEGIN|END) SOLUTION\s*$")
MIN_LINE = 12  # shorter solution lines ("return x", "pass") say nothing by themselves


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    run = subprocess.run([sys.executable, "-m", "llmperf.cli", "release", *map(str, SOURCES),
                          "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- what must stay secret, read from the sources independently of llmperf.grading ---------------

def solution_blocks(text: str) -> list[list[str]]:
    """The lines between the markers, each stripped (and, in a Markdown cell, of its '# ')."""
    blocks, current, markdown = [], None, False
    for line in text.splitlines():
        m = MARKER.match(line)
        if m and m.group(2) == "BEGIN":
            current, markdown = [], bool(m.group(1))
        elif m and m.group(2) == "END":
            blocks.append(current)
            current = None
        elif current is not None:
            stripped = line.strip()
            current.append(re.sub(r"^#\s?", "", stripped) if markdown else stripped)
    return blocks


def question_calls(source: str) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == "question"]


def declaration_texts(source: str) -> list[str]:
    """The text of each question's hidden= and reference= arguments (and of each hidden check),
    as the source writes it; a short one ("_pruned") together with its keyword."""
    found = []
    for call in question_calls(source):
        for kw in call.keywords:
            if kw.arg not in ("hidden", "reference"):
                continue
            parts = [kw.value] + (list(kw.value.elts) if isinstance(kw.value, ast.List) else [])
            for part in parts:
                text = norm(ast.get_source_segment(source, part) or "")
                found.append(text if len(text) >= 20 else f"{kw.arg}={text}")
    return found


@pytest.fixture(scope="module")
def public_lines() -> set[str]:
    """Lines anyone may read anyway: the chapters (sources and outputs) and the library."""
    lines = set()
    paths = [*(ROOT / "chapters").glob("*.py"), *(ROOT / "llmperf").rglob("*.py")]
    for path in paths:
        lines.update(norm(line) for line in path.read_text(encoding="utf-8").splitlines())
    for path in (ROOT / "chapters").glob("*.ipynb"):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            texts = ["".join(cell["source"])] + ["".join(o.get("text", "")) for o in
                                                  cell.get("outputs", [])]
            lines.update(norm(line) for t in texts for line in t.splitlines())
    return lines


@pytest.fixture(scope="module")
def secrets(public_lines) -> dict[str, list[str]]:
    """Exercise -> texts that must not appear on the site."""
    found = {}
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        blocks = solution_blocks(text)
        assert blocks, f"{path.name}: no solution markers, so nothing to look for"
        inside = {norm(line) for block in blocks for line in block}
        outside = {norm(line) for line in text.splitlines()} - inside
        lines = {norm(line) for block in blocks for line in block
                 if len(norm(line)) >= MIN_LINE} - outside - public_lines
        whole = {norm(" ".join(block)) for block in blocks if len(norm(" ".join(block))) >= 30}
        found[path.stem] = sorted(lines | whole) + declaration_texts(text)
    return found


def site_texts(site: Path) -> dict[str, str]:
    """Every text file of the site but the theme's assets, as a reader would read it."""
    texts = {}
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site)
        if not path.is_file() or path.suffix.lower() in BINARY or rel.parts[0] == "_static":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".html":
            text = html.unescape(re.sub(r"<[^>]+>", "", text))
        elif path.suffix == ".ipynb":
            nb = json.loads(text)
            text = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", []))
        texts[rel.as_posix()] = norm(text)
    return texts


# --- the tests ------------------------------------------------------------------------------------

def test_there_are_exercises():
    assert SOURCES, "no exercises/NN_*.py"


@pytest.mark.parametrize("name", NAMES)
def test_each_set_has_a_page_and_downloads_of_its_release(site, released, name):
    page = site / "exercises" / f"{name}.html"
    assert page.is_file(), f"no page for {name}"
    links = _parse(page).links
    for suffix in (".ipynb", ".py"):
        served = site / "_sources" / "exercises" / f"{name}{suffix}"
        assert served.is_file(), f"{name}: no {suffix} beside its page"
        assert served.read_bytes() == (released / f"{name}{suffix}").read_bytes(), \
            f"{served.relative_to(site)} is not what `llmperf release` writes"
        assert f"../_sources/exercises/{name}{suffix}" in links, f"{name}: no {suffix} download"


def test_exercises_page_offers_every_set(site, released):
    page = site / "exercises" / "index.html"
    links = [unquote(urlsplit(h).path) for h in _parse(page).links]
    for name in NAMES:
        assert f"{name}.html" in links, f"the Exercises page does not link {name}'s page"
        for suffix in (".ipynb", ".py"):
            targets = [(page.parent / h).resolve() for h in links
                       if h.startswith("../_downloads/") and h.endswith(f"/{name}{suffix}")]
            assert targets, f"the Exercises page offers no {name}{suffix}"
            assert all(t.read_bytes() == (released / f"{name}{suffix}").read_bytes()
                       for t in targets), f"{name}{suffix} on the Exercises page is not the release"


def test_no_solution_or_hidden_check_text_anywhere_on_the_site(site, secrets):
    texts = site_texts(site)
    assert any(k.startswith("_sources/exercises/") for k in texts), "no downloads were scanned"
    leaks = {}
    for name, needles in secrets.items():
        for needle in needles:
            where = [rel for rel, text in texts.items() if needle in text]
            if where:
                leaks.setdefault(name, []).append(f"{needle[:80]!r} in {where[:3]}")
    assert not leaks, f"instructor text on the site: {json.dumps(leaks, indent=1)}"


def test_downloads_carry_no_grading_markers(site):
    downloads = [p for p in site.rglob("*") if p.is_file() and p.suffix in (".py", ".ipynb")
                 and p.relative_to(site).parts[0] in ("_sources", "_downloads")]
    assert downloads
    words = ("BEGIN SOLUTION", "END SOLUTION", "hidden=", "reference=")
    marked = {p.relative_to(site).as_posix(): [w for w in words if w in p.read_text("utf-8")]
              for p in downloads if p.parent.name != "chapters"}
    assert not {k: v for k, v in marked.items() if v}, marked


def test_no_file_or_link_is_an_instructor_source(site):
    digest = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    instructor = {digest(p.read_bytes()): p.name for name in NAMES
                  for p in (ROOT / "exercises").glob(f"{name}.*")}
    copies = [p.relative_to(site).as_posix() for p in site.rglob("*")
              if p.is_file() and digest(p.read_bytes()) in instructor]
    assert not copies, f"instructor sources in the site: {copies}"
    bad = {}
    for page in page_files(site):
        for href in _parse(page).links:
            parts = urlsplit(href)
            if re.search(r"(^|/)exercises/\d\d_\w+\.(py|ipynb)$", parts.path) and (
                    parts.scheme or parts.netloc):
                bad.setdefault(page.relative_to(site).as_posix(), []).append(href)
    assert not bad, f"links to an instructor source outside the site: {bad}"


def declared(path: Path) -> tuple[int, float]:
    """Questions and points that a source declares with question(..., points=...)."""
    calls = question_calls(path.read_text(encoding="utf-8"))
    points = sum(ast.literal_eval(kw.value) for c in calls for kw in c.keywords
                 if kw.arg == "points")
    return len(calls), points


def page_text(site: Path, rel: str) -> str:
    return norm(html.unescape(re.sub(r"<[^>]+>", " ", (site / rel).read_text("utf-8"))))


def test_pages_quote_the_points_the_sources_declare(site):
    counts = {name: declared(path) for name, path in zip(NAMES, SOURCES)}
    questions = sum(q for q, _ in counts.values())
    points = sum(p for _, p in counts.values())
    exercises = page_text(site, "exercises/index.html")
    assert f"{len(NAMES)} sets hold {questions} questions worth {points:g} points" in exercises
    # The table: one row per set, with its questions and points.
    index = (site / "exercises" / "index.html").read_text("utf-8")
    for name, (q, p) in counts.items():
        row = re.search(rf'<tr[^>]*>(?:(?!</tr>).)*?{name}\.html(?:(?!</tr>).)*</tr>', index, re.S)
        assert row, f"no row for {name}"
        cells = [norm(html.unescape(re.sub(r"<[^>]+>", "", c)))
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)]
        assert str(q) in cells and f"{p:g}" in cells, f"{name}: {cells}, declared {q}, {p:g}"
    syllabus = page_text(site, "instructors/syllabus.html")
    assert f"{questions} questions worth {points:g} points" in syllabus
    for name, (q, p) in counts.items():
        number = int(name[:2])
        assert f"Exercises {number} : {q} questions, {p:g} points" in syllabus or \
            f"Exercises {number}: {q} questions, {p:g} points" in syllabus, name


def test_exercises_page_is_for_students(site):
    text = page_text(site, "exercises/index.html")
    for said in ("JupyterLab", "PASS", "FAIL", "hidden", "NotImplementedError", "Restart Kernel"):
        assert said in text, f"the Exercises page does not say {said!r}"
    for instructors_only in ("llmperf release", "results.json", "run_autograder", "isolation",
                             "BEGIN SOLUTION"):
        assert instructors_only not in text, f"the Exercises page says {instructors_only!r}"


def test_instructors_page_has_the_instructors_material(site):
    text = page_text(site, "instructors/index.html")
    for said in ("llmperf release", "llmperf grade", "Gradescope", "results.json",
                 "What the grader protects against", "isolation", "BEGIN SOLUTION"):
        assert said in text, f"the instructors' page does not say {said!r}"
    links = _parse(site / "instructors" / "index.html").links
    assert any(h.endswith("syllabus.html") for h in links), "no link to the syllabus"


def test_exercises_readme_points_at_both_pages():
    readme = (ROOT / "exercises" / "README.md").read_text("utf-8")
    for target in ("book/exercises/index.md", "book/instructors/index.md"):
        assert target in readme and (ROOT / target).is_file(), target
