"""Reports of grades: Gradescope's results.json, a table for people, a CSV for a class."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

from .grade import Grade
from .isolation import MODES, Isolation


def results_json(grade: Grade) -> dict:
    """Gradescope's format: score, execution_time, output, and one test per question."""
    tests = [{"name": q.name, "score": q.score, "max_score": q.points,
              "status": "passed" if q.passed == q.total else "failed",
              "output": "\n".join(q.lines), "visibility": "visible"} for q in grade.questions]
    isolation = Isolation(grade.isolation).record() if grade.isolation in MODES else None
    return {"score": grade.score, "execution_time": round(grade.execution_time_s, 2),
            "output": summary(grade), "visibility": "visible", "stdout_visibility": "hidden",
            "extra_data": {"isolation": isolation}, "tests": tests}


def summary(grade: Grade) -> str:
    head = f"{grade.submission}: {grade.score:g} of {grade.max_score:g} points"
    if grade.exercise:
        head += f" (exercise {grade.exercise})"
    notes = [f"- {m}" for m in grade.messages]
    if notes:
        notes.insert(0, "Problems found while running the notebook:")
    return "\n".join([head] + notes)


def write_results(grade: Grade, path: Path) -> None:
    """Write results.json atomically, then check that the file holds what was written.

    Called once the submission's processes are gone (`run_submission` returns only
    then): a temporary file in the same folder, renamed into place, read back.
    OSError if what is on disk differs.
    """
    _write_atomic(Path(path), json.dumps(results_json(grade), indent=2, allow_nan=False) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with open(path, encoding="utf-8") as f:
        if f.read() != text:
            raise OSError(f"{path} changed after the grader wrote it")


def table(grade: Grade) -> str:
    """A fixed-width table: one line per question, the checks that failed, a total."""
    lines = [summary(grade).splitlines()[0], f"{'question':<28}{'score':>8}{'max':>7}  checks"]
    for q in grade.questions:
        lines.append(f"{q.name:<28}{q.score:>8g}{q.points:>7g}  {q.passed}/{q.total}")
        lines += [f"    {line}" for line in q.lines if line.startswith("FAIL")]
    lines.append(f"{'total':<28}{grade.score:>8g}{grade.max_score:>7g}")
    lines += [f"note: {m}" for m in grade.messages]
    return "\n".join(lines)


def write_csv(grades: list[Grade], path: Path) -> None:
    """One row per submission: its score, the maximum, and each question's score."""
    names: list[str] = []
    for g in grades:
        names += [q.name for q in g.questions if q.name not in names]
    rows = [["submission", "exercise", "score", "max_score"] + names + ["notes"]]
    for g in grades:
        by_name = {q.name: q.score for q in g.questions}
        rows.append([g.submission, g.exercise or "", g.score, g.max_score]
                    + [by_name.get(n, "") for n in names] + [" | ".join(g.messages)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
