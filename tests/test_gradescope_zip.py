"""The Gradescope zip (exercises/gradescope/make_zip.sh) carries what grading needs and no more.

Built for every exercise: small (under 2 MB; the trained models' weights, some 25 MB, stay
out), with setup.sh, run_autograder and the package setup.sh installs, and one instructor
source. Then one zip is unpacked and its own package grades the instructor's solutions to
full marks without the weights. tests/test_gradescope.py rehearses Gradescope itself, as root.
"""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted(p.stem for p in (ROOT / "exercises").glob("[0-9][0-9]_*.py"))
LIMIT_BYTES = 2_000_000


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gradescope")
    for name in EXERCISES:
        subprocess.run(["bash", str(ROOT / "exercises/gradescope/make_zip.sh"), name, str(out)],
                       check=True, capture_output=True)
    return {name: out / f"{name}.zip" for name in EXERCISES}


def test_there_are_exercises_to_zip():
    assert len(EXERCISES) >= 9


@pytest.mark.parametrize("name", EXERCISES)
def test_the_zip_is_small_and_holds_no_weights(zips, name):
    path = zips[name]
    assert path.stat().st_size < LIMIT_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"
    names = zipfile.ZipFile(path).namelist()
    assert not [n for n in names if n.endswith(".safetensors")]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert not [n for n in names if n.startswith("course/llmperf/trained/weights/")]


@pytest.mark.parametrize("name", EXERCISES)
def test_the_zip_holds_what_setup_and_run_autograder_use(zips, name):
    with zipfile.ZipFile(zips[name]) as z:
        names = {n for n in z.namelist() if not n.endswith("/")}  # files, not folders
        assert {"setup.sh", "run_autograder", "course/pyproject.toml", "course/README.md",
                "course/llmperf/__init__.py", "course/llmperf/cli.py",
                "course/llmperf/grading/__init__.py", f"course/exercises/{name}.py"} <= names
        # only this exercise's instructor source
        assert [n for n in names if n.startswith("course/exercises/")] == \
            [f"course/exercises/{name}.py"]
        run = z.read("run_autograder").decode()
        assert f'EXERCISE="{name}"' in run and "__EXERCISE__" not in run
        for script in ("setup.sh", "run_autograder"):
            assert (z.getinfo(script).external_attr >> 16) & 0o111, f"{script} not executable"
        # every module of the package came along (the weights are data, not modules)
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "llmperf").rglob("*.py")
                   if "__pycache__" not in p.parts}
        assert {f"course/{m}" for m in modules} <= names


# llmperf.trained, however it is imported or reached (lp.trained.load, from llmperf import ...)
USES_TRAINED = re.compile(r"llmperf\.trained|\blp\.trained\b|from\s+llmperf\s+import[^\n]*"
                          r"\btrained\b|from\s+\.+\s*import[^\n]*\btrained\b|\.\.?trained\b")


def test_no_exercise_loads_the_trained_models():
    """What lets the zip leave the weights out: grading runs the exercises and the grading
    package, none of which touches llmperf.trained (whose load() reads them)."""
    assert USES_TRAINED.search("m = lp.trained.load('moe')")
    assert USES_TRAINED.search("from llmperf import serving, trained")
    assert not USES_TRAINED.search("_TRAINED_MOE = dict(...)  # the course's trained MoE")
    sources = [ROOT / "exercises" / f"{name}.py" for name in EXERCISES]
    for path in sources + sorted((ROOT / "llmperf" / "grading").rglob("*.py")):
        found = USES_TRAINED.search(path.read_text())
        assert found is None, f"{path.relative_to(ROOT)} uses llmperf.trained: {found.group(0)}"


def test_the_unpacked_package_grades_without_the_weights(zips, tmp_path):
    name = "02_phases"
    with zipfile.ZipFile(zips[name]) as z:
        z.extractall(tmp_path / "source")
    course = tmp_path / "source" / "course"
    assert not (course / "llmperf" / "trained" / "weights").exists()
    results = tmp_path / "results.json"
    # The instructor source graded as a submission: full marks by construction. The package
    # is the zip's (PYTHONPATH first; the working tree is not on the path from tmp_path).
    script = ("import sys, llmperf\n"
              f"assert llmperf.__file__.startswith({str(course)!r}), llmperf.__file__\n"
              "from llmperf.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-c", script, "grade", str(course / "exercises" / f"{name}.py"),
         "--exercise", name, "--source", str(course / "exercises"), "--results", str(results),
         "--isolation", "none"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(course)}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    graded = json.loads(results.read_text())
    assert graded["tests"], graded
    assert graded["score"] == sum(t["max_score"] for t in graded["tests"]) > 0, done.stdout
