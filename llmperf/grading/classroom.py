"""Grading a class: every core at work, a progress bar, a per-question summary and a score plot.

`grade_many` grades each submission in a process of a pool, `workers` at a time; each
process sandboxes its submission as a single grade does (its own keeper, its own
subreaper). With one worker, or one submission, it grades in this process. A fault of
the grader (an exception of its own, not a broken submission) stops the whole run: the
exception reaches the caller with the worker's traceback chained to it, and the caller
writes nothing.

Beside the CSV of a class, `write_summary` writes NAME.summary.md (per exercise and
question: mean score, full marks, how many answered, forbidden calls, and the hidden
checks failed most, with their descriptions) and NAME.distribution.png (the scores).
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from . import grade as grading
from .box import Isolation, Limits
from .grade import Grade
from .halves import Submission

MOST_FAILED = 3  # hidden checks listed per question in the summary


@dataclass(frozen=True)
class Options:
    """How every submission of a run is graded (see `grade.grade_file`)."""

    isolation: Isolation
    source_dir: Path | None = None
    exercise: str | None = None
    limits: Limits | None = None


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grade_one(sub: Submission, options: Options) -> Grade:
    """Grade one submission: what each process of the pool runs."""
    return grading.grade_submission(sub, options.source_dir, options.exercise, options.limits,
                                    isolation=options.isolation)


def grade_many(subs: list[Submission], options: Options, workers: int, progress: bool = False,
               grade: Callable[[Submission, Options], Grade] = grade_one) -> list[Grade]:
    """The grades of `subs`, in their order, `workers` at a time.

    progress: draw a progress bar (tqdm) on stderr. grade: what grades one submission,
    a module-level function (the pool's processes import it by name).
    """
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
    from tqdm import tqdm

    grades: list[Grade | None] = [None] * len(subs)
    with tqdm(total=len(subs), disable=not progress, unit="submission") as bar:
        if workers == 1 or len(subs) <= 1:
            for i, sub in enumerate(subs):
                grades[i] = grade(sub, options)
                bar.update(1)
            return grades
        # spawn: a fresh interpreter per process, not a fork of this one and its threads
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(subs)), mp_context=context) as pool:
            futures = {pool.submit(grade, sub, options): i for i, sub in enumerate(subs)}
            try:
                for future in as_completed(futures):
                    grades[futures[future]] = future.result()
                    bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return grades


# ---- the summary of a class ---------------------------------------------------------------------
def summary_paths(csv_path: Path) -> tuple[Path, Path]:
    """Where the summary and the plot go, beside the CSV: NAME.summary.md, NAME.distribution.png."""
    csv_path = Path(csv_path)
    stem = csv_path.with_suffix("") if csv_path.suffix == ".csv" else csv_path
    return (stem.with_name(stem.name + ".summary.md"),
            stem.with_name(stem.name + ".distribution.png"))


def class_summary(grades: list[Grade], title: str) -> str:
    """Markdown: per exercise, the scores and a table per question, then what was not graded."""
    graded = [g for g in grades if not g.setup_error]
    lines = [f"# Grading summary: {title}", "",
             f"{len(grades)} submission{'s' * (len(grades) != 1)}; "
             f"{len(grades) - len(graded)} could not be graded (listed at the end)."]
    for exercise in sorted({g.exercise for g in graded}):
        lines += [""] + _exercise_summary([g for g in graded if g.exercise == exercise], exercise)
    failed = [g for g in grades if g.setup_error]
    if failed:
        lines += ["", "## Not graded", ""] + [f"- {g.submission}: {' '.join(g.messages)}"
                                              for g in failed]
    return "\n".join(lines) + "\n"


def _exercise_summary(grades: list[Grade], exercise: str) -> list[str]:
    scores = [g.score for g in grades]
    top = grades[0].max_score
    full = sum(s == top for s in scores)
    lines = [f"## Exercise {exercise}: {len(grades)} submissions, {top:g} points", "",
             f"Total: mean {statistics.mean(scores):.2f}, median {statistics.median(scores):g}, "
             f"lowest {min(scores):g}, highest {max(scores):g}; {full} with full marks.", "",
             "| question | points | mean score | full marks | answered | called a forbidden "
             "function |", "|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(q.name for g in grades for q in g.questions))
    most_failed = []
    for name in names:
        results = [q for g in grades for q in g.questions if q.name == name]
        answered = [q for q in results if q.answered]
        lines.append(f"| {name} | {results[0].points:g} | "
                     f"{statistics.mean(q.score for q in results):.2f} | "
                     f"{sum(q.passed == q.total for q in results)} | {len(answered)} | "
                     f"{sum(bool(q.forbidden) for q in results)} |")
        counts = Counter(failed for q in answered for failed in q.hidden_failed)
        most_failed += [(name, number, why, n, len(answered))
                        for (number, why), n in sorted(counts.items(),
                                                       key=lambda item: (-item[1], item[0]))
                        [:MOST_FAILED]]
    lines += ["", "### The hidden checks failed most", "",
              f"Up to {MOST_FAILED} per question, among the submissions that answered it "
              "(a blank or undefined answer fails every check and is not counted here)."]
    if not most_failed:
        return lines + ["", "None failed."]
    lines += ["", "| question | hidden check | failed by | what it checks |", "|---|---|---|---|"]
    lines += [f"| {name} | {number} | {n} of {answered} | {why} |"
              for name, number, why, n, answered in most_failed]
    return lines


def plot_scores(grades: list[Grade], path: Path, title: str) -> None:
    """A histogram of the scores (points for one exercise, percent of the maximum for several)."""
    import matplotlib
    from matplotlib.figure import Figure

    from ..plots import STYLE

    graded = [g for g in grades if not g.setup_error and g.max_score > 0]
    one = len({g.exercise for g in graded}) <= 1
    top = graded[0].max_score if graded and one else 100.0
    scores = [g.score if one else 100 * g.score / g.max_score for g in graded]
    with matplotlib.rc_context(STYLE):
        fig = Figure()
        ax = fig.subplots()
        bins = [top * i / 20 for i in range(21)]
        ax.hist(scores, bins=bins, color="tab:blue", edgecolor="white")
        ax.set_xlim(0, top)
        ax.set_xlabel("score (points)" if one else "score (% of the maximum)")
        ax.set_ylabel("submissions")
        ax.set_title(f"{title}: {len(scores)} graded" + (f", {top:g} points" if one else ""))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)


def write_summary(grades: list[Grade], csv_path: Path) -> tuple[Path, Path]:
    """Write the summary and the plot beside `csv_path`; their paths."""
    summary_path, plot_path = summary_paths(csv_path)
    title = Path(csv_path).name
    summary_path.write_text(class_summary(grades, title), encoding="utf-8")
    plot_scores(grades, plot_path, title)
    return summary_path, plot_path
