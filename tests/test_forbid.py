"""Questions that forbid library calls: naming the code, noting the calls, reporting or failing.

`grading_cases/forbid.py` has three questions: `weights_gib` forbids
`ModelConfig.param_count` and only reports a call; `fit` forbids `lp.max_batch_size` and
fails the checks that call it; the value `tokens` forbids the whole module
`llmperf.analytic.perfmodel` and fails. Each submission below is graded for real.
"""
import contextlib
import csv
import functools
import io
import json
import types
from pathlib import Path

import pytest

import llmperf as lp
from llmperf import cli
from llmperf.grading.grade import grade_file
from llmperf.grading.isolation import choose_isolation
from llmperf.grading.notebooks import load_exercise
from llmperf.grading.reports import results_json, table
from llmperf.grading.watch import Watcher, targets

CASES = Path(__file__).resolve().parent / "grading_cases"
ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.py"))

WEIGHTS = 'def weights_gib(name):\n    return lp.get_model(name).weight_bytes("fp16") / 2**30'
FIT = ("def fit(name, accelerator, tokens):\n"
       "    m, a = lp.get_model(name), lp.get_accelerator(accelerator)\n"
       "    free = a.mem_capacity - m.weight_bytes('fp16')\n"
       "    return max(0, int(free // (tokens * m.kv_bytes_per_token('fp16'))))")
TOKENS = ("_m, _a = lp.get_model('llama-2-7b'), lp.get_accelerator('A10')\n"
          "tokens = int((_a.mem_capacity - _m.weight_bytes('fp16')) "
          "// _m.kv_bytes_per_token('fp16'))")


@functools.cache
def isolation():
    return choose_isolation("auto").isolation


def grade(tmp_path: Path, *cells: str):
    path = tmp_path / "sub.py"
    path.write_text("".join(f"# %%\n{c}\n\n" for c in ("import llmperf as lp",) + cells))
    return grade_file(path, CASES, "forbid", isolation=isolation())


def by_name(grade_) -> dict:
    return {q.name: q for q in grade_.questions}


# ---- naming the code --------------------------------------------------------------------------
def test_targets_name_functions_methods_properties_classes_and_modules():
    (label, file, name, line), = targets("llmperf.max_batch_size")
    assert (label, file, name) == ("llmperf.max_batch_size", "analytic/perfmodel.py",
                                   "max_batch_size")
    assert line == lp.max_batch_size.__code__.co_firstlineno
    assert [t[2] for t in targets("llmperf.ModelConfig.param_count")] == ["param_count"]
    assert [t[2] for t in targets("llmperf.ModelConfig.q_dim")] == ["q_dim"]  # a property
    methods = {t[2] for t in targets("llmperf.Accelerator")}
    assert {"peak", "ridge_point"} <= methods and "__init__" not in methods  # dataclass-made
    assert targets("llmperf.analytic.batching") == [
        ("llmperf.analytic.batching", "analytic/batching.py", "", 0)]
    assert targets("llmperf.serving") == [("llmperf.serving", "serving/", "", 0)]


@pytest.mark.parametrize("label, why", [
    ("numpy.sum", "must start with 'llmperf.'"),
    ("llmperf.no_such_function", "llmperf has no 'no_such_function'"),
    ("llmperf.ModelConfig.no_such_method", "llmperf.ModelConfig has no 'no_such_method'"),
    ("llmperf.GiB", "not a function, method, property, class or module"),
    ("llmperf.np", "llmperf has no 'np'"),
])
def test_a_name_that_names_no_llmperf_code_is_refused(label, why):
    with pytest.raises(ValueError, match=why):
        targets(label)


def test_the_watcher_counts_only_calls_made_from_a_cell():
    watcher = Watcher(targets("llmperf.ModelConfig.param_count"))
    namespace = {"lp": lp}
    cell = compile("m = lp.get_model('gpt2')\nm.weight_bytes('fp16')\nm.param_count()",
                   "<cell 7>", "exec")
    with watcher:
        exec(cell, namespace)
    assert watcher.take() == [["llmperf.ModelConfig.param_count", 7]]  # once: weight_bytes's
    with watcher:                                                      # own call is not counted
        lp.get_model("gpt2").param_count()  # from this file, not from a cell
    assert watcher.take() == []


# ---- grading ----------------------------------------------------------------------------------
def test_the_solution_calls_nothing_forbidden(tmp_path):
    g = grade_file(CASES / "forbid.py", CASES, "forbid", isolation=isolation())
    assert g.score == g.max_score == 4
    assert all(q.forbidden == () for q in g.questions)


def test_a_reported_call_keeps_its_points_and_is_named_everywhere(tmp_path):
    weights = 'def weights_gib(name):\n    return lp.get_model(name).param_count() * 2 / 2**30'
    g = grade(tmp_path, weights, FIT, TOKENS)
    q = by_name(g)["weights_gib"]
    assert q.score == 1 and q.forbidden == ("llmperf.ModelConfig.param_count",)
    assert q.lines[-1] == ("NOTE  the answer called llmperf.ModelConfig.param_count, which this "
                           "question asks you not to call (reported to the instructor; the score "
                           "stands)")
    data = results_json(g)
    assert data["extra_data"]["forbidden_calls"] == {
        "weights_gib": ["llmperf.ModelConfig.param_count"]}
    test = next(t for t in data["tests"] if t["name"] == "weights_gib")
    assert test["extra_data"]["forbidden_calls"] == ["llmperf.ModelConfig.param_count"]
    assert "weights_gib called llmperf.ModelConfig.param_count" in data["output"]
    assert "NOTE  the answer called llmperf.ModelConfig.param_count" in table(g)


def test_a_failing_call_costs_the_checks_however_the_function_was_imported(tmp_path):
    alias = ("from llmperf.analytic.perfmodel import max_batch_size as mbs\n"
             "def fit(name, accelerator, tokens):\n"
             "    return mbs(name, accelerator, tokens, ecc=False)")
    g = grade(tmp_path, WEIGHTS, alias, TOKENS)
    q = by_name(g)["fit"]
    assert q.score == 0 and q.forbidden == ("llmperf.max_batch_size",)
    assert q.lines[0] == ("FAIL  every check: the answer called llmperf.max_batch_size, which "
                          "this question does not allow")
    assert by_name(g)["weights_gib"].score == 1 and by_name(g)["tokens"].score == 1


def test_a_helper_in_another_cell_counts_but_a_scratch_cell_does_not(tmp_path):
    helper = "def _capacity(*args):\n    return lp.max_batch_size(*args, ecc=False)"
    scratch = "print(lp.max_batch_size('llama-2-7b', 'A10', 4096, ecc=False))"
    # only the visible check's arguments go through the helper: that check fails, not the other
    fit = ("def fit(name, accelerator, tokens):\n"
           "    if name == 'llama-2-7b':\n        return _capacity(name, accelerator, tokens)\n"
           + "\n".join(FIT.splitlines()[1:]))
    g = grade(tmp_path, WEIGHTS, helper, scratch, fit, TOKENS)
    q = by_name(g)["fit"]
    assert (q.passed, q.total, q.forbidden) == (1, 2, ("llmperf.max_batch_size",))
    assert q.lines[0].startswith("FAIL  fit('llama-2-7b', 'A10', 4096): called "
                                 "llmperf.max_batch_size")
    assert q.lines[1] == "PASS  hidden check 1 (a GQA model at 8,192 tokens)"

    g = grade(tmp_path, WEIGHTS, scratch, FIT, TOKENS)  # the scratch cell alone costs nothing
    assert g.score == g.max_score and all(q.forbidden == () for q in g.questions)


def test_a_value_computed_with_a_forbidden_module_fails(tmp_path):
    tokens = "tokens = lp.max_batch_size('llama-2-7b', 'A10', 1, ecc=False)"
    g = grade(tmp_path, WEIGHTS, FIT, tokens)
    q = by_name(g)["tokens"]
    assert q.score == 0 and q.forbidden == ("llmperf.analytic.perfmodel",)
    assert q.lines[0].startswith("FAIL  every check: the answer called llmperf.analytic.perfmodel")


def test_the_csv_has_a_column_of_forbidden_calls(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    weights = 'def weights_gib(name):\n    return lp.get_model(name).param_count() * 2 / 2**30'
    for name, cells in (("alice", (WEIGHTS, FIT, TOKENS)), ("bob", (weights, FIT, TOKENS))):
        (folder / f"{name}.py").write_text("".join(f"# %%\n{c}\n\n"
                                                   for c in ("import llmperf as lp",) + cells))
    scores = tmp_path / "scores.csv"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["grade", str(folder), "--exercise", "forbid", "--source", str(CASES),
                         "--csv", str(scores), "--jobs", "1"]) == 0
    rows = {r["submission"]: r for r in csv.DictReader(scores.open())}
    assert rows["alice.py"]["forbidden_calls"] == ""
    assert rows["bob.py"]["forbidden_calls"] == "weights_gib: llmperf.ModelConfig.param_count"
    assert rows["bob.py"]["weights_gib"] == "1.0"


# ---- the exercises ------------------------------------------------------------------------------
@pytest.mark.parametrize("source", EXERCISES, ids=lambda p: p.name)
def test_exercises_that_say_not_to_call_the_library_declare_it(source):
    """Prose that tells students not to call the library is backed by forbid=[...]."""
    text = source.read_text().lower()
    says = any(phrase in text for phrase in (
        "do not call", "don't call", "without calling", "not to call", "teach you nothing",
        "teaches you nothing", "answer these questions for you", "the grader reports calls"))
    questions = load_exercise(source).questions
    assert says and any(q.forbid for q in questions)
    for q in questions:  # every forbidden name is mentioned where students read it
        for name in q.forbid:
            short = name.rsplit(".", 1)[-1]
            assert short in source.read_text(), (q.name, name)


def test_the_check_cell_names_what_it_forbids(tmp_path, capsys):
    from llmperf.grading.release import release

    ipynb, _ = release(CASES / "forbid.py", tmp_path)
    import nbformat

    nb = nbformat.read(ipynb, as_version=4)
    cell = next(c.source for c in nb.cells if "check('fit'" in c.source)
    assert "forbid=['llmperf.max_batch_size'], on_forbidden='fail'" in cell
    namespace = vars(types.ModuleType("notebook"))
    exec("import llmperf as lp\n" + FIT, namespace)
    exec(cell, namespace)
    out = capsys.readouterr().out
    assert ("NOTE  do not call llmperf.max_batch_size in this answer: the grader reports such "
            "calls (the checks that call one fail)") in out
    assert json.dumps(results_json(grade(tmp_path, WEIGHTS, FIT, TOKENS)))  # plain data
