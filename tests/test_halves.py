"""A submission's two halves: NAME.ipynb and NAME.py handed in together, one of them stale.

The rule (`llmperf.grading.halves`): the same code, the .ipynb; different code, the half
modified at least 2 s later; within 2 s, the .ipynb. The grade says which and why, and
warns about the other. Each case is graded for real, on the toy exercise, whose full
marks (4) and blank score (0) tell which half was graded.
"""
import contextlib
import functools
import io
import json
import os
from pathlib import Path

import jupytext
import nbformat
import pytest

from llmperf import cli
from llmperf.grading.grade import grade_submission, submissions_in
from llmperf.grading.halves import MTIME_MARGIN_S, code_of, pick_halves, when
from llmperf.grading.isolation import choose_isolation
from llmperf.grading.release import release
from llmperf.grading.reports import results_json, table

CASES = Path(__file__).resolve().parent / "grading_cases"
ANSWERS = {"add": "def add(a, b):\n    return a + b",
           "describe_bound": ('def describe_bound(intensity, ridge):\n'
                              '    return "compute" if intensity > ridge else "memory"'),
           "answer": "answer = 42"}
T0 = 1_700_000_000.0  # a fixed modification time, in seconds


@functools.cache
def isolation():
    return choose_isolation("auto").isolation


def halves(folder: Path, answered: str, py_time: float, ipynb_time: float) -> tuple[Path, Path]:
    """The released toy notebook as NAME.ipynb and NAME.py, the answers written into one of them
    (`answered`: "py", "ipynb" or "both"), with these modification times."""
    ipynb, py = release(CASES / "toy.py", folder)
    for path in (ipynb, py):
        if answered in ("both", path.suffix[1:]):
            nb = jupytext.read(path) if path.suffix == ".py" else nbformat.read(path, 4)
            code = [c for c in nb.cells if c.cell_type == "code"]
            for name, body in ANSWERS.items():
                at = next(i for i, c in enumerate(code) if f"check({name!r}" in c.source)
                code[at - 1].source = body
            if path.suffix == ".py":
                jupytext.write(nb, path, fmt="py:percent")
            else:
                nbformat.write(nb, path)
    os.utime(py, (py_time, py_time))
    os.utime(ipynb, (ipynb_time, ipynb_time))
    return ipynb, py


def graded(folder: Path):
    sub, = submissions_in(folder)
    return sub, grade_submission(sub, CASES, "toy", isolation=isolation())


@pytest.mark.parametrize("newer, stale", [("py", "ipynb"), ("ipynb", "py")])
def test_the_half_with_newer_code_is_graded_and_the_other_is_named(tmp_path, newer, stale):
    later = {"py": (T0 + 60, T0), "ipynb": (T0, T0 + 60)}[newer]
    halves(tmp_path, newer, *later)
    sub, g = graded(tmp_path)
    assert sub.path.suffix == f".{newer}" and g.score == g.max_score == 4
    why, warning = g.notes
    assert why == (f"graded toy.{newer}, not toy.{stale} beside it: the two hold different code, "
                   f"and toy.{newer} was modified later ({when(T0 + 60)} against {when(T0)})")
    assert warning.startswith(f"warning: toy.{stale} was not graded")
    data = results_json(g)
    assert why in data["output"] and warning in data["output"]
    assert data["extra_data"]["notes"] == [why, warning]
    assert f"note: {why}" in table(g)


@pytest.mark.parametrize("stale", ["py", "ipynb"])
def test_a_stale_half_that_is_newer_is_graded_as_it_is(tmp_path, stale):
    """The rule is about time, not content: the newer half is graded even when it is blank."""
    answered = "ipynb" if stale == "py" else "py"
    later = {"py": (T0 + 60, T0), "ipynb": (T0, T0 + 60)}[stale]
    halves(tmp_path, answered, *later)
    sub, g = graded(tmp_path)
    assert sub.path.suffix == f".{stale}" and g.score == 0
    assert g.notes[1].startswith(f"warning: toy.{answered} was not graded")


def test_halves_saved_within_the_margin_grade_the_notebook(tmp_path):
    halves(tmp_path, "py", T0 + MTIME_MARGIN_S / 2, T0)
    sub, g = graded(tmp_path)
    assert sub.path.suffix == ".ipynb" and g.score == 0
    assert "modified within 2 s of each other" in g.notes[0]
    assert "so the .ipynb is graded" in g.notes[0]
    assert g.notes[1].startswith("warning: toy.py was not graded")


def test_halves_with_the_same_code_grade_the_notebook_and_say_so(tmp_path):
    halves(tmp_path, "both", T0 + 600, T0)  # times do not matter when the code is the same
    sub, g = graded(tmp_path)
    assert sub.path.suffix == ".ipynb" and g.score == 4
    assert g.notes == ("graded toy.ipynb; toy.py beside it holds the same code",)


def test_only_code_counts_not_outputs_or_trailing_spaces(tmp_path):
    ipynb, py = halves(tmp_path, "both", T0, T0)
    nb = nbformat.read(ipynb, 4)
    nb.cells[-1].source += "   \n\n"
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("my notes"))
    nbformat.write(nb, ipynb)
    assert code_of(ipynb) == code_of(py) and code_of(ipynb)


def test_an_unreadable_half_counts_as_different_code(tmp_path):
    ipynb, py = halves(tmp_path, "py", T0 + 60, T0)
    ipynb.write_text("{ not json")
    os.utime(ipynb, (T0, T0))
    sub, = pick_halves([ipynb, py])
    assert sub.path == py
    assert "toy.ipynb cannot be read as a notebook" in sub.notes[0]


def test_both_paths_on_the_command_line_follow_the_rule(tmp_path):
    ipynb, py = halves(tmp_path / "work", "py", T0 + 60, T0)
    results = tmp_path / "results.json"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(["grade", str(ipynb), str(py), "--source", str(CASES),
                         "--results", str(results)]) == 0
    data = json.loads(results.read_text())
    assert data["score"] == 4 and "graded toy.py, not toy.ipynb" in data["output"]
    assert "note: graded toy.py" in out.getvalue()


def test_results_for_several_submissions_is_a_usage_error(tmp_path, capsys):
    ipynb, _ = halves(tmp_path / "a", "py", T0, T0)
    other = tmp_path / "b" / "other.ipynb"
    other.parent.mkdir()
    other.write_bytes(ipynb.read_bytes())
    assert cli.main(["grade", str(ipynb), str(other), "--source", str(CASES),
                     "--results", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "--results" in err and "toy.ipynb, other.ipynb" in err
    assert not (tmp_path / "r.json").exists()
