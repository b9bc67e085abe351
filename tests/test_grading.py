"""The exercise toolchain: release, feedback in the notebook, and sandboxed grading.

Robustness cases are small submissions to `grading_cases/toy.py` written here,
each with the score every question must get. Time limits are cut to a second
so that the endless loops cost little.
"""
import ast
import contextlib
import functools
import io
import json
import re
import sys
import types
from pathlib import Path

import jupytext
import nbformat
import pytest

from llmperf import cli
from llmperf.grading import grade as grading
from llmperf.grading.answers import call_text, mismatch, to_source
from llmperf.grading.box import Limits
from llmperf.grading.grade import grade_file
from llmperf.grading.isolation import choose_isolation
from llmperf.grading.notebooks import load_exercise
from llmperf.grading.questions import Collector, case, question
from llmperf.grading.release import leaks, release
from llmperf.grading.reports import results_json, write_results

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.py"))
CASES = Path(__file__).resolve().parent / "grading_cases"
FAST = Limits(cell_timeout_s=1.0, question_timeout_s=1.0, slack_s=1.0)

ADD = "def add(a, b):\n    return a + b"
BOUND = ('def describe_bound(intensity, ridge):\n'
         '    return "compute" if intensity > ridge else "memory"')
ANSWER = "answer = 42"
FULL = {"add": 2, "describe_bound": 1, "answer": 1}


def submission(tmp_path: Path, *cells: str, name: str = "sub.py") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"# %%\n{c}\n\n" for c in cells), encoding="utf-8")
    return path


@functools.cache
def isolation():
    """The strongest isolation here, chosen once for these tests and passed to every grade."""
    return choose_isolation("auto").isolation


def grade_toy(path: Path, limits: Limits = FAST):
    return grade_file(path, CASES, "toy", limits, isolation=isolation())


def scores(grade) -> dict:
    return {q.name: q.score for q in grade.questions}


def released(tmp_path: Path, source: Path) -> tuple[Path, Path]:
    ipynb, py = release(source, tmp_path / "release")
    return ipynb, py


# ---- every exercise: full marks for the solution, zero for the stubs, nothing leaked ------------
@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.name)
def test_instructor_solution_scores_full_marks(source):
    grade = grade_file(source, source.parent, source.stem, isolation=isolation())
    assert grade.questions and grade.score == grade.max_score, _failures(grade)
    assert not grade.messages, grade.messages
    assert [q.forbidden for q in grade.questions if q.forbidden] == []  # nothing it forbids


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.name)
def test_every_hidden_check_says_what_it_checks(source):
    """A student who fails a hidden check reads its description, never its arguments."""
    for q in load_exercise(source).questions:
        whys = [c.why for c in q.checks if c.hidden]
        if q.kind == "value":
            assert whys == [None]  # its one check is the value itself, shown to the student
            continue
        assert whys and all(w and "\n" not in w and len(w) <= 120 for w in whys), q.name
        assert len(set(whys)) == len(whys), f"{q.name}: two hidden checks say the same"


@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.name)
def test_released_stub_scores_zero(tmp_path, source):
    ipynb, py = released(tmp_path, source)
    for path in (ipynb, py):
        grade = grade_file(path, source.parent, isolation=isolation())  # exercise from metadata
        assert grade.exercise == source.stem
        assert grade.max_score > 0 and grade.score == 0
        for q in grade.questions:  # one line per question, naming its answer cell
            assert len(q.lines) == 1, q.lines
            assert q.lines[0].startswith("FAIL  not answered yet"), q.lines
            assert "the answer cell of Question" in q.lines[0] and q.name in q.lines[0]
        assert not grade.messages, grade.messages


@pytest.mark.parametrize("source", EXERCISES + [CASES / "toy.py"], ids=lambda p: p.name)
def test_release_hides_solutions_and_hidden_checks(tmp_path, source):
    ipynb, py = released(tmp_path, source)
    ex = load_exercise(source)
    for path in (ipynb, py):
        text = path.read_text()
        assert leaks(ex, text) == []
        assert "question(" not in text.replace("from llmperf.grading import question", "")
        visible = {to_source(c.args) for q in ex.questions for c in q.visible_checks}
        for q in ex.questions:
            for c in q.checks:
                if c.hidden and c.args and to_source(c.args) not in visible:
                    why = f"{q.name}: hidden arguments {c.args} leaked"
                    assert to_source(c.args) not in text, why
    nb = nbformat.read(ipynb, as_version=4)
    assert nb.metadata["llmperf"]["exercise"] == source.stem
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    stubs = [c for c in nb.cells if "raise NotImplementedError" in c.source]
    assert len(stubs) >= len([q for q in ex.questions if q.kind == "function"])


def test_release_is_deterministic(tmp_path):
    first = release(CASES / "toy.py", tmp_path / "a")
    second = release(CASES / "toy.py", tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def _failures(grade) -> str:
    return "\n".join([line for q in grade.questions for line in q.lines if line.startswith("FAIL")]
                     + list(grade.messages))


# ---- feedback inside the student's notebook -----------------------------------------------------
def _check_cell(nb, name):
    return next(c.source for c in nb.cells
                if c.cell_type == "code" and f"check({name!r}" in c.source)


def test_visible_checks_print_expected_got_and_tolerance(tmp_path):
    ipynb, _ = released(tmp_path, CASES / "toy.py")
    nb = nbformat.read(ipynb, as_version=4)
    for body, verdict in ((ADD, "PASS"), ("def add(a, b):\n    return a - b", "FAIL")):
        namespace, out = {}, io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(body, namespace)
            exec(_check_cell(nb, "add"), namespace)
        text = out.getvalue()
        assert verdict in text and "expected 3" in text and "tolerance" in text, text
        assert "2 hidden checks" in text
    if verdict == "FAIL":
        assert "got -1" in text


def test_a_value_question_never_says_ok_in_the_notebook(tmp_path):
    ipynb, _ = released(tmp_path, CASES / "toy.py")
    cell = _check_cell(nbformat.read(ipynb, as_version=4), "answer")
    assert "value=True, shape='number'" in cell
    for value, verdict in (("41", "----  answer = 41, a number as asked. NOT CHECKED"),
                           ("42", "----  answer = 42, a number as asked. NOT CHECKED"),
                           ("'42'", "FAIL  answer = '42': expected a number, got '42'")):
        namespace, out = {}, io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(f"answer = {value}", namespace)
            exec(cell, namespace)
        assert verdict in out.getvalue() and "OK" not in out.getvalue(), out.getvalue()


def test_a_checks_arguments_are_shown_whole():
    deciding = [[100, 50], [900, 100], [50, 50]]  # 33 characters: the old limit cut it at 30
    assert call_text("admitted", [deciding, 4, 1000], {}) == \
        "admitted([[100, 50], [900, 100], [50, 50]], 4, 1000)"
    long = [[512, 128]] * 60
    text = call_text("admitted", [long, 64], {"free": 21_048})
    assert text.startswith("admitted([[512, 128], [512, 128], ") and text.endswith(
        ", ...] (60 items), 64, free=21048)")
    assert "[512, 1" not in text.replace("[512, 128]", "")  # no item cut in two


@pytest.mark.parametrize("why, problem", [("", "got ''"), ("two\nlines", "one line"),
                                          ("x" * 121, "at most 120")])
def test_a_description_is_one_short_line(why, problem):
    with pytest.raises(ValueError, match=f"case\\(\\.\\.\\., why=\\.\\.\\.\\).*{problem}"):
        case(1, why=why)


def test_a_hidden_check_without_a_description_is_refused():
    with Collector(), pytest.raises(ValueError, match="hidden check 2 has no description"):
        question("add", 1, visible=[(1, 2)], hidden=[case(3, 4, why="larger"), (5, 6)])
    with Collector(), pytest.raises(ValueError, match="on_forbidden must be one of"):
        question("add", 1, visible=[(1, 2)], forbid=["llmperf.matmul_cost"], on_forbidden="zero")
    with Collector(), pytest.raises(ValueError, match="forbid must be a list of dotted names"):
        question("add", 1, visible=[(1, 2)], forbid="llmperf.matmul_cost")


def test_hidden_checks_report_their_description_not_their_arguments(tmp_path):
    grade = grade_toy(submission(tmp_path, "def add(a, b):\n    return int(a) + int(b)", BOUND,
                                 ANSWER))
    add = next(q for q in grade.questions if q.name == "add")
    assert add.lines == ("PASS  add(1, 2) = 3", "PASS  hidden check 1 (two larger integers)",
                         "FAIL  hidden check 2 (two floats, given by keyword): wrong answer")
    wrong = grade_toy(submission(tmp_path, ADD, BOUND, "answer = 41"))
    value = next(q for q in wrong.questions if q.name == "answer")
    assert value.lines == ("FAIL  the value of answer = 41: not the expected value "
                           "(an integer count: no tolerance)",)


# ---- robustness: each case loses only the points it should --------------------------------------
LOOP = "def add(a, b):\n    while True:\n        pass"
STUBBORN = ("def add(a, b):\n    while True:\n        try:\n            while True:\n"
            "                pass\n        except BaseException:\n            pass")
ROBUSTNESS = {
    "syntax error": ([ADD, "def describe_bound(intensity, ridge)\n    return 1", ANSWER],
                     {"describe_bound": 0}, "SyntaxError"),
    "exception at import": (["import no_such_module_here", ADD, BOUND, ANSWER], {},
                            "ModuleNotFoundError"),
    "endless loop in a function": ([LOOP, BOUND, ANSWER], {"add": 0}, "time limit"),
    "endless loop in a cell": (["while True:\n    pass", ADD, BOUND, ANSWER], {}, "time limit"),
    "loop that swallows the alarm": ([STUBBORN, BOUND, ANSWER], {"add": 0}, "time limit"),
    "missing function": ([BOUND, ANSWER], {"add": 0}, None),
    "duplicated and reordered cells": ([ANSWER, BOUND, ADD, BOUND, ADD, "x = 1"], {}, None),
    "enormous output": (["for i in range(200_000):\n    print('spam' * 20)",
                         "print('x' * 50_000_000)", ADD, BOUND, ANSWER], {}, None),
    "enormous return value": (["def add(a, b):\n    return [0.5] * 2_000_000", BOUND, ANSWER],
                              {"add": 0}, None),
    "sys.exit in a cell": ([ADD, "import sys\nsys.exit(0)", BOUND, ANSWER], {}, "sys.exit"),
    "os._exit in a cell": ([ADD, "import os\nos._exit(3)", BOUND, ANSWER], {},
                           "exited with status 3"),
    "os._exit in a function": (["import os\ndef add(a, b):\n    os._exit(0)", BOUND, ANSWER],
                               {"add": 0}, "exited with status 0"),
    "wrong answers and types": (["def add(a, b):\n    return object()",
                                 "def describe_bound(i, r):\n    return 'COMPUTE'", "answer = 41"],
                                {"add": 0, "describe_bound": 1 / 3, "answer": 0}, None),
    "memory hog": (["hog = bytearray(8 * 1024 ** 3)", ADD, BOUND, ANSWER], {}, "MemoryError"),
    "input() and a stubborn stdin": (["name = input()", ADD, BOUND, ANSWER], {}, "EOFError"),
}


@pytest.mark.parametrize("case", list(ROBUSTNESS), ids=lambda c: c.replace(" ", "-"))
def test_robustness(tmp_path, case):
    cells, lost, message = ROBUSTNESS[case]
    grade = grade_toy(submission(tmp_path, *cells))
    expected = {name: lost.get(name, points) for name, points in FULL.items()}
    got = scores(grade)
    assert got == pytest.approx(expected, abs=0.01), _failures(grade)
    if message:
        assert message in _failures(grade), _failures(grade)
    json.dumps(results_json(grade), allow_nan=False)


def test_submission_cannot_write_results_or_change_the_grader(tmp_path):
    results = tmp_path / "results.json"
    forge = (f"import json, os\n"
             f"open({str(results)!r}, 'w').write(json.dumps({{'score': 1000, 'tests': []}}))\n"
             "import llmperf.grading.answers as c\nc.mismatch = lambda *a, **k: None\n"
             "for fd in range(3, 20):\n"
             "    try:\n"
             "        os.write(fd, b'{\"e\": \"case\", \"q\": 0, \"c\": 0, \"got\": 3}\\n')\n"
             "    except OSError:\n"
             "        pass")
    wrong = "def add(a, b):\n    return 0"
    grade = grade_toy(submission(tmp_path, forge, wrong, BOUND, ANSWER))
    write_results(grade, results)
    data = json.loads(results.read_text())
    assert data["score"] == grade.score <= 2
    assert scores(grade)["add"] == 0


def test_unreadable_notebook_gives_valid_results(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{ this is not json")
    results = tmp_path / "out" / "results.json"
    assert cli.main(["grade", str(bad), "--exercise", "toy", "--source", str(CASES),
                     "--results", str(results)]) == 0
    data = json.loads(results.read_text())
    assert data["score"] == 0 and "cannot be read" in data["output"]
    assert len(data["tests"]) == len(FULL)


def test_unknown_exercise_still_writes_results(tmp_path):
    results = tmp_path / "results.json"
    code = cli.main(["grade", str(submission(tmp_path, ADD)), "--exercise", "nope",
                     "--source", str(CASES), "--results", str(results)])
    assert code == 2
    assert json.loads(results.read_text())["score"] == 0


# ---- results.json, the table, folder mode -------------------------------------------------------
def test_results_json_follows_gradescope_format(tmp_path):
    grade = grade_toy(submission(tmp_path, ADD, "def describe_bound(i, r):\n    return 'memory'"))
    path = tmp_path / "results.json"
    write_results(grade, path)
    data = json.loads(path.read_text())
    assert set(data) >= {"score", "execution_time", "tests"}
    assert data["score"] == pytest.approx(sum(t["score"] for t in data["tests"]))
    for test in data["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed") and 0 <= test["score"] <= test["max_score"]
    add = next(t for t in data["tests"] if t["name"] == "add")
    assert add["status"] == "passed" and "hidden check 2" in add["output"]
    assert "(10, 20)" not in json.dumps(data)  # hidden arguments are never reported


def test_folder_mode_writes_one_csv_row_per_submission(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    submission(folder, ADD, BOUND, ANSWER, name="alice.py")
    submission(folder, ADD, name="bob.py")
    csv_path = tmp_path / "scores.csv"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["grade", str(folder), "--exercise", "toy", "--source", str(CASES),
                         "--csv", str(csv_path)]) == 0
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("submission,exercise,score,max_score,add,describe_bound,answer")
    assert rows[1].startswith("alice.py,toy,4.0,4.0") and rows[2].startswith("bob.py,toy,2.0,4.0")
    assert "total" in out.getvalue()


def test_release_command_and_py_submission_metadata(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["release", str(CASES / "toy.py"), "--output", str(tmp_path)]) == 0
    nb = jupytext.read(tmp_path / "toy.py")
    assert nb.metadata["llmperf"]["exercise"] == "toy"


@pytest.mark.parametrize("argv, needle", [
    (["estimate", "llama-2-7b", "A10", "--prompt-tokens", "350", "--output-tokens", "150"],
     "roofline"),
    (["layers", "llama-2-7b", "--phase", "decode", "--batch", "8", "--seq-len", "4096",
      "--accelerator", "A10"], "ffn"),
])
def test_analytic_commands(argv, needle):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    assert needle in out.getvalue()


def test_gradescope_folder_with_results(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    submission(folder, ADD, BOUND, ANSWER, name="my work (1).py")
    nb = jupytext.read(folder / "my work (1).py")
    nbformat.write(nb, folder / "my work (1).ipynb")
    (folder / "notes.txt").write_text("not a notebook")
    results = tmp_path / "results" / "results.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["grade", str(folder), "--exercise", "toy", "--source", str(CASES),
                         "--results", str(results)]) == 0
    assert json.loads(results.read_text())["score"] == 4


def test_import_llmperf_leaves_grading_alone():
    import subprocess
    import sys

    code = ("import sys, llmperf; "
            "print(any(m.startswith(('llmperf.grading', 'llmperf.cli')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- what the grader tells a student: by question, once ----------------------------------------
def _released_toy(tmp_path: Path, answers: dict[str, str], first: str | None = None) -> Path:
    """The released toy notebook with some answer cells replaced (by question name)."""
    ipynb, _ = released(tmp_path, CASES / "toy.py")
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for name, body in answers.items():
        check = next(i for i, c in enumerate(code) if f"check({name!r}" in c.source)
        code[check - 1].source = body
    if first is not None:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    path = tmp_path / "work.ipynb"
    nbformat.write(nb, path)
    return path


def test_unanswered_value_question_is_named_by_its_question(tmp_path):
    grade = grade_toy(_released_toy(tmp_path, {"add": ADD}))
    lines = {q.name: q.lines for q in grade.questions}
    assert scores(grade) == {"add": 2, "describe_bound": 0, "answer": 0}
    assert lines["answer"] == ("FAIL  not answered yet: the answer cell of Question 3 (answer) "
                               "still raises NotImplementedError",)
    assert len(lines["describe_bound"]) == 1 and "Question 2" in lines["describe_bound"][0]
    assert "not defined" not in _failures(grade)


def test_a_defining_cell_that_raised_is_named_with_its_error(tmp_path):
    path = _released_toy(tmp_path, {"add": ADD, "describe_bound": BOUND, "answer": "answer = 1/0"})
    grade = grade_toy(path)
    line, = next(q.lines for q in grade.questions if q.name == "answer")
    assert line.startswith("FAIL  `answer` is not defined: the answer cell of Question 3 (answer) "
                           "stopped with ZeroDivisionError"), line
    assert any(m.startswith("the answer cell of Question 3 (answer): ZeroDivisionError")
               for m in grade.messages), grade.messages


def test_other_cells_are_counted_as_code_cells(tmp_path):
    path = _released_toy(tmp_path, {"add": ADD, "describe_bound": BOUND, "answer": ANSWER},
                         first="import no_such_module_here")
    grade = grade_toy(path)
    assert grade.score == grade.max_score
    assert grade.messages == ("code cell 1 from the top, counting code cells only "
                              "(`import no_such_module_here`): ModuleNotFoundError: No module "
                              "named 'no_such_module_here' (line 1 of the cell)",)


def test_a_deleted_answer_cell_is_reported_once(tmp_path):
    grade = grade_toy(submission(tmp_path, ADD, BOUND))
    line, = next(q.lines for q in grade.questions if q.name == "answer")
    assert "`answer` is not defined: no cell defines it" in line


def _grading_imports() -> dict[str, set[str]]:
    """Each module of llmperf.grading: the sibling modules it imports, even inside a function."""
    graph = {}
    for path in (ROOT / "llmperf" / "grading").glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            (node.module or "").split(".")[0] or alias.name
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names}
    return graph


def test_grading_modules_import_in_one_direction():
    """No module of llmperf.grading imports one that imports it back, even inside a function."""
    graph = _grading_imports()
    assert graph["answers"] == set() and graph["box"] == set() and graph["keeper"] == set()
    assert graph["__init__"] == {"answers", "questions"}
    state = {}

    def visit(name, trail):
        assert state.get(name) != "open", f"import cycle: {' -> '.join(trail + [name])}"
        if state.get(name) is None:
            state[name] = "open"
            for other in graph.get(name, ()):
                visit(other, trail + [name])
            state[name] = "done"

    for name in graph:
        visit(name, [])


def test_grading_modules_are_small_and_share_no_private_names():
    """Each module stays readable, and what one module uses of another is public."""
    users = [*(ROOT / "llmperf" / "grading").glob("*.py"), ROOT / "llmperf" / "cli.py",
             *(ROOT / "tests").glob("test_*.py")]
    modules = {p.stem for p in (ROOT / "llmperf" / "grading").glob("*.py")}
    found = []
    for path in users:
        text = path.read_text()
        if path.parent.name == "grading":
            assert len(text.splitlines()) <= 350, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (
                    node.level == 1 or (node.module or "").startswith("llmperf.grading")):
                found += [f"{path.name}: from {node.module} import {a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in modules and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                found.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert found == []


def test_every_constant_of_the_keeper_is_used():
    """keeper.py holds the Linux constants the grader needs, and no others."""
    package = ROOT / "llmperf" / "grading"
    source = (package / "keeper.py").read_text()
    everything = "\n".join(p.read_text() for p in package.glob("*.py"))
    names = [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
             for t in ast.walk(node) if isinstance(t, ast.Name) and t.id.isupper()]
    assert names
    unused = [n for n in names if len(re.findall(rf"\b{n}\b", everything)) < 2]
    assert unused == []


# ---- declaring questions: the loader's collector, or a check by hand ----------------------------
def test_questions_go_to_the_innermost_open_collector():
    with Collector() as outer:
        question("first", 1)
        with Collector() as inner:
            question("nested", 1)
        question("after", 1)
    assert [q.name for q in outer.questions] == ["first", "after"]
    assert [q.name for q in inner.questions] == ["nested"]
    with Collector() as again, pytest.raises(ValueError, match="declared twice"):
        question("twice", 1)
        question("twice", 2)
    assert [q.name for q in again.questions] == ["twice"]


def _declare_from_a_helper():
    """A question declared one call away from the notebook, in globals that lack the answer."""
    question("double", points=1, visible=[(2,)], hidden=[case(5, why="an odd number")],
             forbid=["llmperf.max_batch_size"])


def test_a_question_run_by_hand_checks_the_notebooks_own_solution(monkeypatch, capsys):
    notebook = types.ModuleType("__main__")
    exec("def double(x):\n    return 2 * x", vars(notebook))
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    _declare_from_a_helper()
    assert capsys.readouterr().out.startswith(
        "question double (1 point): 1 visible and 1 hidden checks; forbids "
        "llmperf.max_batch_size (report); the solution passes 2 of 2")


def test_load_exercise_leaves_no_collector_open(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert [q.name for q in load_exercise(CASES / "toy.py").questions] == \
        ["add", "describe_bound", "answer"]
    question("answer", 1)  # no collector: checked at once against the (empty) notebook
    assert "the solution defines no 'answer'" in capsys.readouterr().out


# ---- the grader's own faults --------------------------------------------------------------------
def test_a_fault_in_the_grader_raises_with_its_traceback(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug in the grader")

    monkeypatch.setattr(grading, "question_places", broken)
    with pytest.raises(RuntimeError, match="a bug in the grader"):
        grade_toy(submission(tmp_path, ADD, BOUND, ANSWER))


def test_an_integer_count_must_be_exact_but_a_float_answer_keeps_its_tolerance():
    assert mismatch(8_650_752, 8_650_752) is None
    off_by_one = mismatch(8_650_752, 8_650_753)  # within rel 1e-6, still a wrong count
    assert off_by_one and "no tolerance" in off_by_one
    assert mismatch([63, 8], [63, 9]) is not None
    assert mismatch(8_650_752, 8_650_752.000001) is None  # a float answer: the tolerance
    assert mismatch(0.9, 0.9000000001) is None
    assert mismatch(2, True) is not None  # a bool is not a count
