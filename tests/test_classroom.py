"""Grading a class: a pool of processes, a progress bar, the summary and the score plot.

A class of toy submissions (full marks, wrong answers, blank, an endless loop, and a file
that names no exercise) is graded through the command, and by `grade_many` with one
worker and with two, which must agree.
"""
import contextlib
import functools
import io
from pathlib import Path

import pytest

from llmperf import cli
from llmperf.grading import grade as grading
from llmperf.grading.box import Limits
from llmperf.grading.classroom import Options, class_summary, grade_many, summary_paths
from llmperf.grading.grade import submissions_in
from llmperf.grading.isolation import choose_isolation
from llmperf.grading.release import release

CASES = Path(__file__).resolve().parent / "grading_cases"
FAST = Limits(cell_timeout_s=1.0, question_timeout_s=1.0, slack_s=1.0)
ADD = "def add(a, b):\n    return a + b"
BOUND = ('def describe_bound(intensity, ridge):\n'
         '    return "compute" if intensity > ridge else "memory"')
CLASS = {  # file name: answer cells of the toy exercise ({} leaves the released stubs)
    "ann": {"add": ADD, "describe_bound": BOUND, "answer": "answer = 42"},
    "ben": {"add": "def add(a, b):\n    return int(a) + int(b)", "describe_bound": BOUND},
    "cat": {"add": ADD, "describe_bound": "def describe_bound(i, r):\n    return 'memory'"},
    "dan": {},
    "eve": {"add": "def add(a, b):\n    while True:\n        pass", "answer": "answer = 41"},
}


@functools.cache
def isolation():
    return choose_isolation("auto").isolation


def a_class(folder: Path) -> Path:
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    ipynb, = release(CASES / "toy.py", folder / "release", write_py=False)
    for student, answers in CLASS.items():
        nb = nbformat.read(ipynb, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for name, body in answers.items():
            at = next(i for i, c in enumerate(code) if f"check({name!r}" in c.source)
            code[at - 1].source = body
        nbformat.write(nb, folder / f"{student}.ipynb")
    (folder / "zed.py").write_text("# %%\nanswer = 42\n")  # no metadata: no exercise
    return folder


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["grade", *argv, "--source", str(CASES), "--timeout", "1",
                         "--cell-timeout", "1"])
    return code, out.getvalue(), err.getvalue()


def test_two_workers_grade_as_one_does_in_the_same_order(tmp_path):
    subs = submissions_in(a_class(tmp_path / "class"))
    options = Options(isolation(), CASES, None, FAST)
    one, two = grade_many(subs, options, 1), grade_many(subs, options, 2)
    assert [g.submission for g in two] == [s.name for s in subs]
    assert [(g.score, [q.lines for q in g.questions]) for g in two] == \
        [(g.score, [q.lines for q in g.questions]) for g in one]
    assert [g.score for g in one] == [4.0, 2.33, 2.67, 0.0, 0.0, 0.0]


def _broken(sub, options):
    raise RuntimeError(f"a bug in the grader, met on {sub.name}")


def test_a_grader_fault_in_a_worker_stops_the_run_with_its_traceback(tmp_path):
    subs = submissions_in(a_class(tmp_path / "class"))
    with pytest.raises(RuntimeError, match="a bug in the grader") as raised:
        grade_many(subs, Options(isolation(), CASES, None, FAST), 2, grade=_broken)
    assert "_broken" in str(raised.value.__cause__)  # the worker's own traceback, chained


def test_a_grader_fault_writes_nothing(tmp_path, monkeypatch):
    folder = a_class(tmp_path / "class")

    def broken(*args, **kwargs):
        raise KeyError("a key the grader forgot")

    monkeypatch.setattr(grading, "grade_file", broken)
    scores, results = tmp_path / "out" / "scores.csv", tmp_path / "out" / "results.json"
    with pytest.raises(KeyError, match="a key the grader forgot"):
        run(str(folder / "ann.ipynb"), "--csv", str(scores), "--results", str(results),
            "--jobs", "1")
    with pytest.raises(KeyError, match="a key the grader forgot"):
        run(str(folder), "--csv", str(scores), "--jobs", "1")
    assert not (tmp_path / "out").exists()


def test_the_summary_and_the_plot_beside_the_csv(tmp_path):
    scores = tmp_path / "out" / "scores.csv"
    code, out, err = run(str(a_class(tmp_path / "class")), "--csv", str(scores), "--jobs", "2")
    assert code == 2  # zed.py could not be graded
    summary_path, plot_path = summary_paths(scores)
    assert (summary_path.name, plot_path.name) == ("scores.summary.md", "scores.distribution.png")
    summary = summary_path.read_text()
    assert "6 submissions; 1 could not be graded" in summary
    assert "## Exercise toy: 5 submissions, 4 points" in summary
    assert "Total: mean 1.80, median 2.33, lowest 0, highest 4; 1 with full marks." in summary
    assert "| add | 2 | 1.07 | 2 | 4 | 0 |" in summary  # 4 answered it: dan left the stub
    assert "| answer | 1 | 0.20 | 1 | 2 | 0 |" in summary
    assert "| add | 2 | 2 of 4 | two floats, given by keyword |" in summary
    assert "| answer | 1 | 1 of 2 | the value of answer |" in summary
    assert "- zed.py: cannot grade zed.py" in summary
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot_path.stat().st_size > 5000
    assert f"wrote {summary_path}" in err and f"wrote {plot_path}" in err


def test_the_most_failed_hidden_checks_count_only_answers(tmp_path):
    subs = submissions_in(a_class(tmp_path / "class"))
    grades = grade_many(subs, Options(isolation(), CASES, None, FAST), 1)
    text = class_summary(grades, "class")
    rows = [line for line in text.splitlines() if line.startswith("| add | ")]
    assert rows[1:] == ["| add | 2 | 2 of 4 | two floats, given by keyword |",
                        "| add | 1 | 1 of 4 | two larger integers |"]


def test_the_progress_bar_only_on_a_terminal_or_when_asked(tmp_path):
    folder = a_class(tmp_path / "class")
    _, _, quiet = run(str(folder / "ann.ipynb"), str(folder / "cat.ipynb"), "--jobs", "1")
    _, _, shown = run(str(folder / "ann.ipynb"), str(folder / "cat.ipynb"), "--jobs", "1",
                      "--progress", "on")
    assert "submission" not in quiet and "2/2" not in quiet
    assert "100%" in shown and "2/2" in shown


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_jobs_must_be_at_least_one(tmp_path, jobs):
    code, _, err = run(str(a_class(tmp_path / "class")), "--jobs", jobs)
    assert code == 2 and f"--jobs {jobs}: submissions graded at once must be at least 1" in err
