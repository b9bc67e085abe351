"""Gradescope, end to end, on this machine: the zip's setup.sh and run_autograder, as root.

Gradescope's folders are laid out in a temporary root (source/ from the zip,
submission/, results/); setup.sh builds a fresh venv from the operating system's
Python (one any user may execute), without apt-get and with torch from the wheel
pip finds for the version installed here; run_autograder then grades a correct, a
blank and a hostile submission. About half a minute, most of it installing torch.
It needs root, as Gradescope runs it; as another user it skips and says so.
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest
from proc_scan import processes_with

from llmperf.grading.release import release

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
EXERCISE = "02_phases"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return ("needs root: run_autograder runs as root on Gradescope, and grades each "
                "submission as nobody")
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no system Python at {SYSTEM_PYTHON} (apt-get install python3 python3-venv)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import venv, ensurepip"], capture_output=True)
    if probe.returncode:
        return f"{SYSTEM_PYTHON} has no venv module (apt-get install python3-venv)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LLMPERF_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def autograder():
    """A temporary /autograder with the zip unpacked in source/ and the venv set up."""
    root = Path(tempfile.mkdtemp(prefix="autograder-"))
    root.chmod(0o755)
    try:
        subprocess.run(["bash", str(ROOT / "exercises/gradescope/make_zip.sh"), EXERCISE,
                        str(root / "zip")], check=True, capture_output=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "zipfile", "-e", str(root / "zip" / f"{EXERCISE}.zip"),
                        str(root / "source")], check=True)
        torch = f"torch=={importlib.metadata.version('torch')}"
        env = _clean_env(LLMPERF_APT="0", LLMPERF_PYTHON=SYSTEM_PYTHON,
                         LLMPERF_VENV=str(root / "venv"), LLMPERF_TORCH=torch,
                         LLMPERF_TORCH_INDEX="")
        setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=env,
                               capture_output=True, text=True, timeout=900)
        assert setup.returncode == 0, setup.stderr[-3000:]
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_autograder(root: Path, notebook: Path, isolation: str = "auto") -> tuple[dict, str]:
    for folder in ("submission", "results"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir()
    shutil.copy(notebook, root / "submission" / "my submission.ipynb")
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")],
                          env=_clean_env(LLMPERF_AUTOGRADER=str(root),
                                         LLMPERF_VENV=str(root / "venv"),
                                         LLMPERF_ISOLATION=isolation),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((root / "results" / "results.json").read_text()), done.stdout


def test_the_venv_holds_what_grading_needs_and_nothing_of_the_book(autograder):
    site = [str(p) for p in (autograder / "venv" / "lib").glob("python3*/site-packages")]
    packages = {d.metadata["Name"].lower() for d in importlib.metadata.distributions(path=site)}
    assert {"llmperf-course", "numpy", "torch", "nbformat", "jupytext"} <= packages
    assert not packages & {"jupyterlab", "matplotlib", "jupyter-book", "pytest"}


def test_a_correct_submission_scores_full_marks(autograder):
    results, stdout = run_autograder(autograder, ROOT / "exercises" / f"{EXERCISE}.ipynb")
    assert results["score"] == sum(t["max_score"] for t in results["tests"]) > 0, results["output"]
    assert stdout.startswith("isolation: ")
    assert results["extra_data"]["isolation"]["other_user"] == "nobody"


def test_a_blank_submission_scores_zero(autograder, tmp_path):
    blank, _ = release(ROOT / "exercises" / f"{EXERCISE}.py", tmp_path)
    results, _ = run_autograder(autograder, blank)
    assert results["score"] == 0 and results["tests"]
    assert all(t["output"].startswith("FAIL  not answered yet") for t in results["tests"])


def _hostile(autograder: Path, tmp_path: Path, token: str, go: Path) -> Path:
    """The released notebook with a first cell that tries everything at once.

    Its forger waits for `go` (created once the results are written), then overwrites them.
    """
    ipynb, _ = release(ROOT / "exercises" / f"{EXERCISE}.py", tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    results = autograder / "results" / "results.json"
    source = autograder / "source" / "course" / "exercises" / f"{EXERCISE}.py"
    forge = (f"import json, os, time\nwhile not os.path.exists({str(go)!r}):\n"
             "    time.sleep(0.01)\n"
             f"open({str(results)!r}, 'w').write(json.dumps({{'score': 1000, 'tests': []}}))")
    attack = ("import os, signal, subprocess, sys\n"
              f"subprocess.Popen([sys.executable, '-c', {forge!r}, {token!r}], "
              "start_new_session=True)\n"
              f"stolen = open({str(source)!r}).read()\n")
    kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"
    nb.cells[1:1] = [nbformat.v4.new_code_cell(attack), nbformat.v4.new_code_cell(kill)]
    path = tmp_path / "hostile.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("isolation", ["auto", "user"])
def test_a_hostile_submission_gets_nothing(autograder, tmp_path, isolation):
    token, go = uuid.uuid4().hex, autograder / f"go-{isolation}"
    results, _ = run_autograder(autograder, _hostile(autograder, tmp_path, token, go), isolation)
    assert processes_with(token) == []  # the forger died with the grade
    go.touch()  # had it lived, it would overwrite the results from here on
    on_disk = json.loads((autograder / "results" / "results.json").read_text())
    assert on_disk == results and on_disk["score"] == 0
    assert "extra_data" in on_disk and on_disk["extra_data"]["isolation"]["other_user"] == "nobody"
    assert "PermissionError" in on_disk["output"] or "FileNotFoundError" in on_disk["output"]
    if isolation == "user":
        assert on_disk["extra_data"]["isolation"]["mode"] == "user"
