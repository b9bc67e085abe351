"""Hostile submissions: each attack is a real notebook, graded in every isolation this machine has.

Run as root (as CI and Gradescope do) that is user+namespaces and none, plus user
where `nobody` can execute this Python; as an ordinary user, namespaces (where the
kernel allows unprivileged user namespaces) and none. A mode that does not work
here skips its tests and says why: "needs root: ..." for the two that run the
submission as nobody. Attacks that no grader can stop without isolation (reading
what the grader's own user may read) are checked in the isolated modes only.
"""
import ast
import contextlib
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from proc_scan import processes_with

from llmperf import cli
from llmperf.grading import box, reports, sandbox
from llmperf.grading import isolation as isolation_module
from llmperf.grading.box import MODES, Isolation, Limits, candidates, exposure_warnings
from llmperf.grading.grade import grade_file
from llmperf.grading.isolation import IsolationError, choose_isolation
from llmperf.grading.reports import results_json, write_results

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "grading_cases"
ADD = "def add(a, b):\n    return a + b"
BOUND = ('def describe_bound(intensity, ridge):\n'
         '    return "compute" if intensity > ridge else "memory"')
ANSWER = "answer = 42"
FULL = {"add": 2, "describe_bound": 1, "answer": 1}


HERE = {mode: isolation_module.probe(mode) for mode in MODES}  # (isolation, "") or (None, why not)
AVAILABLE = [m for m in MODES if HERE[m][0] is not None]
ISOLATED_MODES = [m for m in MODES if m != "none"]
NAMESPACE_MODES = [m for m in MODES if Isolation(m).namespaces]


def isolation(mode: str) -> Isolation:
    """The isolation `mode` where it works here; else the test skips, saying why."""
    found, why = HERE[mode]
    if found is None:
        if "Permission denied" in why:  # root, but user nobody cannot reach this interpreter
            why += ("; needs a venv that user nobody may run: make setup "
                    "PYTHON=/usr/bin/python3 in a clone outside /root (.ci/run does so)")
        pytest.skip(f"{why} (isolation {mode})")
    return found


def limits(mode: str) -> Limits:
    return Limits(cell_timeout_s=2.0, question_timeout_s=2.0, slack_s=1.0, workdir_mb=64)


def notebook(folder: Path, *cells: str, name: str = "sub.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(f"# %%\n{c}\n\n" for c in cells), encoding="utf-8")
    return path


def private_source(tmp_path: Path) -> Path:
    """The toy instructor source in a folder of the grader's own (mode 700, as on Gradescope)."""
    folder = tmp_path / "source"
    folder.mkdir(mode=0o700)
    shutil.copy(CASES / "toy.py", folder / "toy.py")
    return folder


def grade(path: Path, mode: str, source: Path = CASES):
    return grade_file(path, source, "toy", limits(mode), isolation=isolation(mode))


def scores(g) -> dict:
    return {q.name: q.score for q in g.questions}


def notes(g) -> str:
    return "\n".join([line for q in g.questions for line in q.lines] + list(g.messages))


def test_this_machine_has_an_isolation_beyond_none():
    assert "none" in AVAILABLE
    if os.geteuid() == 0 or Path("/proc/sys/user/max_user_namespaces").read_text().strip() != "0":
        assert set(AVAILABLE) - {"none"}, HERE


def test_the_modes_that_need_root_say_so(monkeypatch):
    monkeypatch.setattr(isolation_module.os, "geteuid", lambda: 1000)
    for mode in ("user+namespaces", "user"):
        found, why = isolation_module.probe(mode)
        assert found is None and why.startswith("needs root: "), why
    with pytest.raises(IsolationError, match="user: needs root"):
        choose_isolation("user")


# ---- no process outlives a grade -----------------------------------------------------------------
# The daemon tells the cell that started it that it runs (a pipe), then waits for a file
# that the test creates once the results are written, and overwrites them. Whether it
# died with the grade is read from /proc, at once, however busy the machine.
DAEMON = ("import json, os, sys, time\n"
          "os.write(int(sys.argv[3]), b'up')\n"
          "while not os.path.exists(sys.argv[4]):\n"
          "    time.sleep(0.01)\n"
          "open(sys.argv[1], 'w').write(json.dumps({'score': 1000, 'tests': []}))")


def _daemon_cells(results: Path, token: str, go: Path) -> list[str]:
    start = ("import os, subprocess, sys\n"
             "up, up_w = os.pipe()\n"
             f"argv = [sys.executable, '-c', {DAEMON!r}, {str(results)!r}, {token!r}, "
             f"str(up_w), {str(go)!r}]\n"
             "daemon = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,\n"
             "                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,\n"
             "                          pass_fds=(up_w,))\n"
             "os.close(up_w)\n"
             "started = os.read(up, 2) == b'up'")
    double_fork = ("up2, up_w = os.pipe()\n"
                   "os.set_inheritable(up_w, True)\n"
                   "argv[5] = str(up_w)\n"
                   "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                   "        os.execv(sys.executable, argv)\n    os._exit(0)\nos.wait()\n"
                   "os.close(up_w)\n"
                   "started = started and os.read(up2, 2) == b'up'")
    return [start, double_fork, ADD, BOUND, "answer = 42 if started else 0"]


@pytest.mark.parametrize("mode", MODES)
def test_a_detached_daemon_dies_before_the_results_are_written(tmp_path, mode):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    results_dir.chmod(0o777)  # only the daemon's death keeps it from writing here
    results, go = results_dir / "results.json", tmp_path / "go"
    token = uuid.uuid4().hex
    g = grade(notebook(tmp_path / "sub", *_daemon_cells(results, token, go)), mode)
    assert scores(g) == FULL, notes(g)  # both daemons said they were running
    assert processes_with(token) == []  # and neither is now
    write_results(g, results)
    go.touch()  # a daemon still alive would overwrite the results from here on
    assert json.loads(results.read_text()) == json.loads(json.dumps(results_json(g)))


@pytest.mark.parametrize("mode", MODES)
def test_killing_its_parent_neither_stops_grading_nor_frees_a_process(tmp_path, mode):
    token = uuid.uuid4().hex
    cells = ["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
             *_daemon_cells(tmp_path / "never.json", token, tmp_path / "go")]
    children_before = sandbox.children()
    g = grade(notebook(tmp_path / "sub", *cells), mode)
    assert scores(g) == FULL, notes(g)
    assert processes_with(token) == []
    assert sandbox.children() <= children_before


# ---- nothing to read that it must not ----------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_sys_path_holds_the_package_copy_and_python_only(tmp_path, mode):
    probe = ("import os, sys, llmperf\n"
             f"root = {str(ROOT)!r}\n"
             "clean = not any(os.path.isdir(os.path.join(p, 'exercises')) for p in sys.path)\n"
             "clean = clean and root not in sys.path and os.getcwd() not in sys.path\n"
             "clean = clean and not llmperf.__file__.startswith(root + '/llmperf')\n"
             "answer = 42 if clean else 0")
    g = grade(notebook(tmp_path / "sub", ADD, BOUND, probe), mode)
    assert scores(g) == FULL, notes(g)


@pytest.mark.parametrize("mode", ISOLATED_MODES)
def test_the_instructor_source_cannot_be_read(tmp_path, mode):
    source = private_source(tmp_path)
    cheats = [source / "toy.py", ROOT / "exercises" / "04_boundedness.py"]
    cheat = ("import pathlib, re\n"
             f"for path in {[str(p) for p in cheats]!r}:\n"
             "    text = pathlib.Path(path).read_text()\n"
             "answer = eval(re.search(r'^answer = (.*)$', text, re.M).group(1))")
    g = grade(notebook(tmp_path / "sub", ADD, BOUND, cheat), mode, source)
    assert scores(g) == {**FULL, "answer": 0}, notes(g)
    assert "FileNotFoundError" in notes(g) or "PermissionError" in notes(g), notes(g)


@pytest.mark.parametrize("mode", ISOLATED_MODES)
def test_another_students_submission_cannot_be_read_in_a_folder_grade(tmp_path, mode):
    isolation(mode)
    folder = tmp_path / "submissions"
    alice = notebook(folder, ADD, BOUND, "answer = 6 * 7", name="alice.py")
    copy = (f"import re\ntext = open({str(alice)!r}).read()\n"
            "answer = eval(re.search(r'^answer = (.*)$', text, re.M).group(1))")
    notebook(folder, ADD, BOUND, copy, name="mallory.py")
    scores_csv = tmp_path / "scores.csv"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["grade", str(folder), "--exercise", "toy", "--source",
                         str(private_source(tmp_path)), "--csv", str(scores_csv),
                         "--isolation", mode]) == 0
    rows = scores_csv.read_text().splitlines()
    assert rows[1].startswith("alice.py,toy,4.0,4.0")
    assert rows[2].startswith("mallory.py,toy,3.0,4.0"), rows[2]


# ---- disk and network ----------------------------------------------------------------------------
FILL = ("import os\nblock = b'x' * (1 << 20)\nerror = None\n"
        "for n in range(128):\n"
        "    try:\n"
        "        with open(f'fill{n}', 'wb') as f:\n"
        "            for _ in range(15):\n"
        "                f.write(block)\n"
        "    except OSError as err:\n"
        "        error = err\n"
        "        break")


def _grading_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("llmperf-grade-*")}


@pytest.mark.parametrize("mode", MODES)
def test_filling_its_working_folder_costs_nothing_after_the_grade(tmp_path, mode):
    before = _grading_folders()
    free = shutil.disk_usage(tempfile.gettempdir()).free
    g = grade(notebook(tmp_path / "sub", FILL, ADD, BOUND, ANSWER), mode)
    assert scores(g) == FULL, notes(g)
    assert _grading_folders() <= before  # its folder is gone, and with it what it wrote
    assert shutil.disk_usage(tempfile.gettempdir()).free > free - (64 << 20)
    if Isolation(mode).namespaces:  # a private tmpfs of workdir_mb
        assert not g.messages, g.messages


@pytest.mark.parametrize("mode", MODES)
def test_the_network_is_cut_where_namespaces_allow(tmp_path, mode):
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        call = ("import socket\ntry:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
                "except OSError as err:\n    blocked = err")
        g = grade(notebook(tmp_path / "sub", call, ADD, BOUND, ANSWER), mode)
        try:
            server.accept()[0].close()
            reached = True
        except TimeoutError:
            reached = False
    assert scores(g) == FULL, notes(g)
    assert reached == (Isolation(mode).record()["network"] == "open")


# ---- saying how isolated it is; no silent fallback ----------------------------------------------
def test_grade_prints_and_records_its_isolation(tmp_path, capsys):
    results = tmp_path / "results.json"
    path = notebook(tmp_path / "sub", ADD, BOUND, ANSWER)
    assert cli.main(["grade", str(path), "--exercise", "toy", "--source", str(CASES),
                     "--results", str(results)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    mode = choose_isolation("auto").isolation.mode
    assert first.startswith(f"isolation: {mode} (")
    record = json.loads(results.read_text())["extra_data"]["isolation"]
    assert record["mode"] == mode and record["namespaces"] == Isolation(mode).namespaces


def test_none_is_announced_with_what_to_do_instead(tmp_path, capsys):
    path = notebook(tmp_path / "sub", ADD, BOUND, ANSWER)
    assert cli.main(["grade", str(path), "--exercise", "toy", "--source", str(CASES),
                     "--isolation", "none"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("isolation: none (")
    assert "warning:" in captured.err and "root" in captured.err and "container" in captured.err


def test_no_silent_fallback(monkeypatch, tmp_path, capsys):
    tried = []

    def refuse(mode):
        tried.append(mode)
        return None, f"{mode} refused here"

    monkeypatch.setattr(isolation_module, "probe", refuse)
    strongest = candidates(os.geteuid())[0]
    with pytest.raises(IsolationError, match=f"{re.escape(strongest)} refused here"):
        choose_isolation("auto")
    assert tried[-1] == "none" and len(tried) >= 2
    path = notebook(tmp_path / "sub", ADD)
    assert cli.main(["grade", str(path), "--exercise", "toy", "--source", str(CASES),
                     "--isolation", "namespaces"]) == 2
    assert "namespaces refused here" in capsys.readouterr().err


def test_auto_takes_the_strongest_that_works(monkeypatch):
    monkeypatch.setattr(isolation_module, "probe", lambda mode: (Isolation(mode), "")
                        if mode in ("namespaces", "none") else (None, "refused"))
    choice = choose_isolation("auto")
    assert choice.isolation.mode == "namespaces"
    stronger = candidates(os.geteuid())[:candidates(os.geteuid()).index("namespaces")]
    assert choice.refused == {m: "refused" for m in stronger}
    with pytest.raises(ValueError, match="isolation must be one of"):
        choose_isolation("chroot")


def test_the_isolation_is_chosen_at_each_call_and_passed_along(monkeypatch, tmp_path):
    monkeypatch.setattr(isolation_module, "probe", lambda mode: (Isolation(mode), ""))
    assert choose_isolation("namespaces").isolation == Isolation("namespaces")
    monkeypatch.setattr(isolation_module, "probe", lambda mode: (None, f"{mode} refused now"))
    with pytest.raises(IsolationError, match="namespaces refused now"):
        choose_isolation("namespaces")  # no choice is kept from one call to the next
    g = grade(notebook(tmp_path / "sub", ADD, BOUND, ANSWER), "none")
    assert scores(g) == FULL and g.isolation == Isolation("none")
    assert results_json(g)["extra_data"]["isolation"]["mode"] == "none"


def test_results_are_checked_after_they_are_written(tmp_path, monkeypatch):
    g = grade(notebook(tmp_path / "sub", ADD, BOUND, ANSWER), "none")
    real_replace = os.replace

    def replace_then_tamper(src, dst):
        real_replace(src, dst)
        Path(dst).write_text('{"score": 1000}')

    monkeypatch.setattr(reports.os, "replace", replace_then_tamper)
    with pytest.raises(OSError, match="changed after the grader wrote it"):
        write_results(g, tmp_path / "results.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".results")] == []


def test_keeper_imports_neither_numpy_nor_the_package():
    """A process with threads cannot enter a user namespace: the keeper must stay bare."""
    import subprocess

    folder = ROOT / "llmperf" / "grading"
    code = (f"import sys; sys.path.append({str(folder)!r}); import keeper; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'llmperf')))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
    tree = ast.parse((folder / "keeper.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


THREADS = ("import re, numpy\n"
           "status = open('/proc/self/status').read()\n"
           "threads = int(re.search(r'Threads:\\s+(\\d+)', status).group(1))\n"
           "answer = 42 if threads == 1 else -threads")


def test_numpy_starts_no_thread_pool_in_the_submission(tmp_path):
    g = grade(notebook(tmp_path / "sub", THREADS, ADD, BOUND), AVAILABLE[0])
    assert scores(g) == FULL, notes(g)


@pytest.mark.parametrize("mode", NAMESPACE_MODES)
def test_a_hidden_folder_inside_a_shown_one_is_empty(tmp_path, monkeypatch, mode):
    """Instructor sources under a folder the private root shows (say, the venv) are hidden."""
    found = isolation(mode)
    shown = tmp_path / "shown"
    (shown / "secret").mkdir(parents=True)
    (shown / "open.txt").write_text("21")
    (shown / "secret" / "answer.txt").write_text("42")
    for folder in (tmp_path, shown, shown / "secret"):
        folder.chmod(0o755)
    binds = (*box.system_binds(), str(shown))
    monkeypatch.setattr(box, "system_binds", lambda: binds)
    cells = [(0, f"half = int(open({str(shown / 'open.txt')!r}).read())"),
             (1, f"answer = int(open({str(shown / 'secret' / 'answer.txt')!r}).read())")]
    run = sandbox.run_submission(cells, [], limits(mode), found, hidden=(shown / "secret",))
    assert run.finished and 0 not in run.cell_errors
    assert run.cell_errors[1].startswith("FileNotFoundError"), run.cell_errors


def test_user_mode_warns_about_what_nobody_could_reach():
    with tempfile.TemporaryDirectory() as top:  # pytest's tmp_path lies in a private folder
        Path(top).chmod(0o755)
        folders = {}
        for name, mode in (("open", 0o755), ("shared", 0o777), ("private", 0o700)):
            folders[name] = Path(top) / name
            folders[name].mkdir()
            folders[name].chmod(mode)
        notes = exposure_warnings(Isolation("user", 65534, 65534), folders)
    assert len(notes) == 2
    assert notes[0].startswith(f"nobody can read the open {folders['open']}")
    assert notes[1].startswith(f"nobody can write to the shared {folders['shared']}")
    assert exposure_warnings(Isolation("user+namespaces", 65534, 65534), folders) == []


def test_a_box_that_cannot_be_set_up_leaves_nothing_behind(monkeypatch):
    before = _grading_folders()
    monkeypatch.setattr(box.os, "chown", lambda *a: (_ for _ in ()).throw(OSError(22, "no")))
    with pytest.raises(OSError), box.Box(Isolation("user", 65534, 65534), limits("user")):
        pass
    assert _grading_folders() <= before
