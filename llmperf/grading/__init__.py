"""Autograded exercises: the question format, release, a sandboxed runner, and grading.

Notebooks import `question` and `case` (instructor sources) and `check` (released
notebooks) from here; all three are light (the standard library and each other). The
release and grading machinery lives in the submodules and is imported by `llmperf.cli`
only.

    questions   how an instructor declares a question, and the checks it resolves to
    answers     plain data, comparing answers, feedback in the notebook (`check`)
    watch       the library calls a question forbids, and noting the ones an answer makes
    notebooks   reading notebooks, solution markers, loading an instructor source
    release     the notebook students receive
    halves      a submission's .ipynb and .py: which of the two is graded
    grade       grading one submission
    reports     results.json, the table, the CSV
    classroom   grading a class: a pool of processes, the summary and the score plot
    box         isolation modes, limits, and the folders a submission runs in
    sandbox     running a submission through keepers
    isolation   choosing the isolation that works here
    keeper      the keeper process (standard library only), with its Linux calls
    worker      the submission's process
"""
from .answers import check
from .questions import case, question

__all__ = ["case", "check", "question"]
