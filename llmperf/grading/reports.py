"""Reports of grades: Gradescope's results.json, a table for people, a CSV for a class.

Each says which half of a submission was graded (`Grade.notes`), what went wrong while
the notebook ran (`Grade.messages`), and the forbidden library calls each answer made
(`QuestionResult.forbidden`). A class's summary and score plot are in `classroom`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

from .grade import Grade


def results_json(grade: Grade) -> dict:
    """Gradescope's format: score, execution_time, output, and one test per question."""
    tests = [{"name": q.name, "score": q.score, "max_score": q.points,
              "status": "passed" if q.passed == q.total else "failed",
              "output": "\n".join(q.lines), "visibility": "visible",
              "extra_data": {"forbidden_calls": list(q.forbidden)}} for q in grade.questions]
    isolation = grade.isolation.record() if grade.isolation else None
    forbidden = {q.name: list(q.forbidden) for q in grade.questions if q.forbidden}
    return {"score": grade.score, "execution_time": round(grade.execution_time_s, 2),
            "output": summary(grade), "visibility": "visible", "stdout_visibility": "hidden",
            "extra_data": {"isolation": isolation, "forbidden_calls": forbidden,
                           "notes": list(grade.notes)},
            "tests": tests}


def summary(grade: Grade) -> str:
    head = f"{grade.submission}: {grade.score:g} of {grade.max_score:g} points"
    if grade.exercise:
        head += f" (exercise {grade.exercise})"
    lines = [head] + [f"- {n}" for n in grade.notes]
    forbidden = [f"- {q.name} called {', '.join(q.forbidden)}" for q in grade.questions
                 if q.forbidden]
    if forbidden:
        lines += ["Library calls that a question asks you not to make:"] + forbidden
    if grade.messages:
        lines += ["Problems found while running the notebook:"]
        lines += [f"- {m}" for m in grade.messages]
    return "\n".join(lines)


def write_results(grade: Grade, path: Path) -> None:
    """Write results.json atomically, then check that the file holds what was written.

    Called once the submission's processes are gone (`run_submission` returns only
    then): a temporary file in the same folder, renamed into place, read back.
    OSError if what is on disk differs.
    """
    write_atomic(Path(path), json.dumps(results_json(grade), indent=2, allow_nan=False) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, rename it into place, and read it back."""
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
        lines += [f"    {line}" for line in q.lines if line.startswith(("FAIL", "NOTE"))]
    lines.append(f"{'total':<28}{grade.score:>8g}{grade.max_score:>7g}")
    lines += [f"note: {n}" for n in grade.notes]
    lines += [f"note: {m}" for m in grade.messages]
    return "\n".join(lines)


def write_csv(grades: list[Grade], path: Path) -> None:
    """One row per submission: its score, the maximum, each question's score, the forbidden
    calls ("question: name, name; ..."), and the notes (which half, problems while running)."""
    names: list[str] = []
    for g in grades:
        names += [q.name for q in g.questions if q.name not in names]
    rows = [["submission", "exercise", "score", "max_score"] + names
            + ["forbidden_calls", "notes"]]
    for g in grades:
        by_name = {q.name: q.score for q in g.questions}
        forbidden = "; ".join(f"{q.name}: {', '.join(q.forbidden)}" for q in g.questions
                              if q.forbidden)
        rows.append([g.submission, g.exercise or "", g.score, g.max_score]
                    + [by_name.get(n, "") for n in names]
                    + [forbidden, " | ".join(g.notes + g.messages)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
