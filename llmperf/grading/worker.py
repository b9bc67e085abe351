"""The submission's side of grading: runs in its own process, which the keeper confines.

It reads a job (cells to run, calls to make) from stdin, runs every cell in
order and keeps going past errors, then calls the graded functions. For each
step it writes one JSON line to the file descriptor named on its command line:
what the call returned (as plain data) or why it failed. It never sees an
expected answer. Its own stdout and stderr go to a bounded buffer. Where the
questions forbid library calls, a `watch.Watcher` notes the ones its cells and
graded functions make, and each step's line lists them under "forbidden".
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import traceback

from .answers import NOT_ANSWERED, NotPlainData, to_plain
from .notebooks import runnable
from .watch import Watcher

OUTPUT_LIMIT_CHARS = 100_000
UNDEFINED = "is not defined"  # the grader explains why, from the notebook's cells


class _TimeLimit(BaseException):
    """Raised by the alarm; a BaseException so that `except Exception` does not catch it."""


class _Sink(io.TextIOBase):
    """Stands in for stdout and stderr: keeps the first characters, drops the rest."""

    def __init__(self, limit: int) -> None:
        self.kept, self.limit = [], limit

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        if self.limit > 0:
            self.kept.append(text[: self.limit])
            self.limit -= len(text)
        return len(text)


def _on_alarm(signum, frame):
    raise _TimeLimit()


def _arm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def describe(err: BaseException, filename: str | None = None) -> str:
    """One line on why student code stopped, with the line number in the cell if known."""
    if isinstance(err, _TimeLimit):
        return "stopped: it ran past the time limit (an endless loop?)"
    if isinstance(err, SystemExit):
        return "stopped: it called sys.exit() or exit()"
    if isinstance(err, NotImplementedError):
        return NOT_ANSWERED
    line = ""
    if filename:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == filename]
        line = f" (line {frames[-1].lineno} of the cell)" if frames else ""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:300]}{line}"


def run_cell(index: int, source: str, namespace: dict, timeout_s: float,
             watcher: Watcher) -> str | None:
    filename = f"<cell {index}>"
    try:
        code = compile(runnable(source), filename, "exec")
    except SyntaxError as err:
        return f"SyntaxError: {err.msg} (line {err.lineno} of the cell)"
    except Exception as err:  # ValueError for null bytes, and the like
        return describe(err)
    try:
        _arm(timeout_s)
        with watcher:
            exec(code, namespace)
    except BaseException as err:
        return describe(err, filename)
    finally:
        _disarm()
    return None


def call(question: dict, check: dict, namespace: dict, seconds_left: float,
         watcher: Watcher) -> dict:
    """{"got": plain value} or {"error": reason} for one check of one question."""
    name = question["name"]
    if name not in namespace:
        return {"error": f"{name} {UNDEFINED}"}
    obj = namespace[name]
    if question["kind"] == "function" and not callable(obj):
        return {"error": f"{name} should be a function, but it is a {type(obj).__name__}"}
    if seconds_left <= 0:
        return {"error": "stopped: the question ran past its time limit"}
    try:
        _arm(seconds_left)
        with watcher:
            value = obj(*check["args"], **check["kwargs"]) if question["kind"] == "function" \
                else obj
        got = to_plain(value)
        _disarm()  # here, inside the try: an alarm due now is caught below, not in `finally`
        return {"got": got}
    except NotPlainData as err:
        return {"error": f"returned {err}"}
    except BaseException as err:
        return {"error": describe(err)}
    finally:
        _disarm()


def main() -> None:
    channel = os.fdopen(int(sys.argv[-1]), "w", encoding="utf-8")
    dumps = json.dumps

    def emit(event: dict) -> None:
        channel.write(dumps(event) + "\n")
        channel.flush()

    job = json.loads(sys.stdin.read())
    sys.stdin = io.StringIO("")
    sys.stdout = sys.stderr = _Sink(OUTPUT_LIMIT_CHARS)
    signal.signal(signal.SIGALRM, _on_alarm)
    namespace: dict = {"__name__": "__main__"}
    watcher = Watcher(job.get("watch", []))
    for index, source in job["cells"]:
        error = run_cell(index, source, namespace, job["cell_timeout_s"], watcher)
        emit({"e": "cell", "i": index, "error": error, "forbidden": watcher.take()})
    for qi in range(job["first_question"], len(job["questions"])):
        question = job["questions"][qi]
        deadline = time.monotonic() + job["question_timeout_s"]
        for ci, check in enumerate(question["checks"]):
            outcome = call(question, check, namespace, deadline - time.monotonic(), watcher)
            forbidden = sorted({label for label, _ in watcher.take()})
            emit({"e": "case", "q": qi, "c": ci, **outcome, "forbidden": forbidden})
    emit({"e": "end"})
    os._exit(0)  # skip the submission's atexit handlers and thread joins
