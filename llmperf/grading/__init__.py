"""Autograded exercises: the question format, release, a sandboxed runner, and grading.

Notebooks import `question` and `case` (instructor sources) and `check` (released
notebooks) from here; all three are light. The release and grading machinery lives
in the submodules and is imported by `llmperf.cli` only.

    questions   how an instructor declares a question, and the checks it resolves to
    answers     plain data, comparing answers, feedback in the notebook (`check`)
    notebooks   reading notebooks, solution markers, loading an instructor source
    release     the notebook students receive
    grade       grading one submission, and the reports
    box         isolation modes, limits, and the folders a submission runs in
    sandbox     choosing the isolation, and running a submission through keepers
    keeper      the keeper process (standard library only), with its Linux calls
    worker      the submission's process
"""
from .answers import check
from .questions import case, question

__all__ = ["case", "check", "question"]
