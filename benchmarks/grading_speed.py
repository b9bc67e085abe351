"""How fast `llmperf grade` grades a class: one worker against a process per core, side by side.

40 generated submissions of exercise 05_batching, as students hand them in (the released
notebook with its answer cells filled): 24 with the instructor's solution, 10 with three
questions answered wrongly (a different three each), 5 with only the first two questions
answered, and 1 whose `admitted` never returns, so that its question runs into the time
limit. The kinds are shuffled among the names (seed 0), as a class's would be. Every
submission is sandboxed as `llmperf grade` does it (the strongest isolation this machine
offers, the default limits: 10 s per question and per cell); the loop alone costs about
12 s of one worker.

The same 40 are graded by `classroom.grade_many` with 1 worker (in this process) and with
one process per core (a pool of spawned processes, which each load the exercise once);
rounds alternate the two, and the scores of every round must agree. Submissions per second
is 40 over the median round's wall-clock time, the pool's start included. Each round also
records the cores the grading used on average (its CPU time, sandboxes included, over the
wall time) and the cores other processes used meanwhile (the machine's CPU time less
ours): on a shared machine the second says how much of the machine the pool could have.

Run: .venv/bin/python benchmarks/grading_speed.py
"""
from __future__ import annotations

import os
import random
import statistics
import tempfile
from pathlib import Path

import nbformat
from _common import write  # also puts the checkout on sys.path

from llmperf.grading.box import Limits
from llmperf.grading.classroom import Options, available_cores, grade_many
from llmperf.grading.grade import submissions_in
from llmperf.grading.isolation import choose_isolation
from llmperf.grading.notebooks import BEGIN, END, load_exercise, question_places
from llmperf.grading.release import release
from llmperf.measured.load import watch_load

ROOT = Path(__file__).resolve().parent.parent
EXERCISE = "05_batching"
ROUNDS = 3
SEED = 0  # the order of the kinds among the 40 names
KINDS = (("correct", 24), ("wrong", 10), ("partial", 5), ("looping", 1))
WRONG = "def {name}(*args):\n    return 0"
LOOP = "def admitted(waiting, free_slots, free_kv_tokens):\n    while True:\n        pass"


def solutions() -> dict[str, str]:
    """Each question's answer cell in the instructor source, its solution markers removed."""
    ex = load_exercise(ROOT / "exercises" / f"{EXERCISE}.py")
    cells = ex.notebook.cells
    places = question_places(ex.notebook, [q.name for q in ex.questions])
    return {name: "\n".join(line for line in cells[p.answer_cell].source.splitlines()
                            if not (BEGIN.match(line) or END.match(line)))
            for name, p in places.items()}


def make_class(folder: Path) -> list[str]:
    """Write the 40 submissions into `folder`; their kinds, in the order of their names."""
    ipynb, = release(ROOT / "exercises" / f"{EXERCISE}.py", folder / "release", write_py=False)
    answers = solutions()
    names = list(answers)
    kinds = [kind for kind, count in KINDS for _ in range(count)]
    random.Random(SEED).shuffle(kinds)  # the looping one among the others, as in a class
    for number, kind in enumerate(kinds):
        cells = dict(answers)
        if kind == "wrong":
            for k in range(3):
                name = names[(number + k) % len(names)]
                cells[name] = WRONG.format(name=name) if not name.endswith("tokens") \
                    else f"{name} = 0"
        elif kind == "partial":
            cells = {name: answers[name] for name in names[:2]}
        elif kind == "looping":
            cells["admitted"] = LOOP
        nb = nbformat.read(ipynb, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for name, body in cells.items():
            at = next(i for i, c in enumerate(code) if f"check({name!r}" in c.source)
            code[at - 1].source = body
        nbformat.write(nb, folder / f"student{number:02d}.ipynb")
    return kinds


def timed(grade) -> tuple[list, dict]:
    """Run `grade()`; its result, and the round's wall time, the cores the grading used on
    average (the pool's processes, keepers and workers included) and the cores other processes
    used meanwhile (`llmperf.measured.load.watch_load`)."""
    with watch_load() as load:
        grades = grade()
    return grades, {"wall_s": load.wall_s, "grading_cores": load.own_cores,
                    "other_cores": load.other_cores}


def main() -> None:
    load_start = os.getloadavg()
    cores = available_cores()
    isolation = choose_isolation("auto").isolation
    options = Options(isolation, ROOT / "exercises", None, Limits())
    rounds: dict[int, list[dict]] = {1: [], cores: []}
    scores: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        kinds = make_class(Path(tmp))
        subs = submissions_in(Path(tmp))
        assert len(subs) == len(kinds) == 40
        for _ in range(ROUNDS):
            for workers in (1, cores):
                grades, measured = timed(lambda w=workers: grade_many(subs, options, w))
                rounds[workers].append(measured)
                scores.append([g.score for g in grades])
    assert all(s == scores[0] for s in scores), "the rounds disagree on the scores"
    by_kind = {kind: sorted({s for s, k in zip(scores[0], kinds) if k == kind})
               for kind, _ in KINDS}
    seconds = {w: [r["wall_s"] for r in rs] for w, rs in rounds.items()}
    median = {w: statistics.median(s) for w, s in seconds.items()}
    rate = {w: len(subs) / median[w] for w in seconds}

    def mid(w, key):
        return statistics.median(r[key] for r in rounds[w])

    results = {str(w): {"workers": w, "rounds": rounds[w], "median_s": median[w],
                        "submissions_per_s": rate[w], "speedup": median[1] / median[w],
                        "median_grading_cores": mid(w, "grading_cores"),
                        "median_other_cores": mid(w, "other_cores")}
               for w in seconds}
    rows = "\n".join(
        f"| {w}{' (every core)' if w == cores else ''} | {median[w]:.1f} s | "
        f"{', '.join(f'{s:.1f}' for s in seconds[w])} | {rate[w]:.2f} | "
        f"{median[1] / median[w]:.2f}x | {mid(w, 'grading_cores'):.2f} | "
        f"{mid(w, 'other_cores'):.2f} |"
        for w in seconds)
    loop_at = kinds.index("looping")
    summary = (
        f"# Grading speed: one worker against one process per core\n\n"
        f"{len(subs)} generated submissions of exercise {EXERCISE} "
        f"({', '.join(f'{n} {k}' for k, n in KINDS)}, the looping one number {loop_at + 1} "
        f"of {len(subs)} by name; scores by kind: "
        f"{'; '.join(f'{k} {v}' for k, v in by_kind.items())}), graded by "
        f"`classroom.grade_many` with isolation {isolation.mode} and the default limits "
        f"(10 s per question and per cell: the looping submission spends about 12 s). "
        f"{ROUNDS} rounds, alternating; the median round is reported, the pool's start "
        "included. Every round gave the same scores.\n\n"
        "| workers | median time | each round | submissions/s | speedup | cores the grading "
        "used | cores other processes used |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"The last two columns are medians over the rounds, from /proc/stat and the CPU time "
        f"of the grading's processes: with {cores} cores, what the others take the pool "
        "cannot have.\n\n"
        f"Load average (1, 5, 15 min) at the start: "
        f"({', '.join(f'{x:.2f}' for x in load_start)}).")
    write("grading_speed", {"exercise": EXERCISE, "submissions": len(subs),
                            "kinds": dict(KINDS), "order": kinds, "scores_by_kind": by_kind,
                            "isolation": isolation.mode, "cores": cores, "rounds": ROUNDS,
                            "load_average_at_start": load_start, "workers": results}, summary)


if __name__ == "__main__":
    main()
