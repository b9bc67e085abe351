"""Autograded exercises: the question format, release, a sandboxed runner, and grading.

Notebooks import `question` (instructor sources) and `check` (released
notebooks) from here; both are light. The release and grading machinery lives
in the submodules and is imported by `llmperf.cli` only.
"""
from .declare import question
from .feedback import check
from .spec import case

__all__ = ["case", "check", "question"]
