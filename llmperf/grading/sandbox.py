"""The sandbox: running a submission, contained by an isolation (`isolation` chooses it).

For each attempt the grader starts a keeper (`keeper`), which confines a child
that becomes the worker (`worker`): it runs the cells, then the calls, and
reports each step on a pipe. This side enforces the limits the worker cannot
enforce on itself: if it goes quiet past a deadline, dies (os._exit, a crash) or
sends garbage, the attempt ends, the step it was on is charged with the failure,
and a fresh attempt takes up the remaining steps, skipping the cell that broke
the last one. Every attempt ends with the keeper killing all that the
submission started; `run_submission` returns only once they are gone.

What the sandbox is made of (isolation modes, limits, folders) is in `box`.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import keeper
from .box import Box, Isolation, Limits

MAX_LINE_BYTES = 1 << 20
MAX_NAMES = 100  # forbidden calls one step may report
MAX_CHILD_BYTES = 32 << 20
STARTUP_S = 10.0
STOP_TIMEOUT_S = 10.0


# ---- running a submission -----------------------------------------------------------------------
@dataclass
class Run:
    """What the submission did: why cells failed, and each check's outcome (got or error)."""

    cell_errors: dict[int, str] = field(default_factory=dict)
    outcomes: dict[tuple[int, int], dict] = field(default_factory=dict)  # with "forbidden"
    cell_forbidden: dict = field(default_factory=dict)  # {calling cell: {forbidden name, ...}}
    finished: bool = False
    survivors: int = 0  # processes that could not be killed (0 unless something is badly wrong)
    setup_error: str | None = None


def run_submission(cells: list[tuple[int, str]], questions: list[dict], limits: Limits,
                   isolation: Isolation, hidden: tuple[Path, ...] = (),
                   watch: tuple = ()) -> Run:
    """Run `cells`, then call each question's checks, contained by `isolation`.

    questions: [{"name", "kind", "checks": [{"args", "kwargs"}]}], in the exercise's order.
    hidden: folders and files the submission must not see (instructor sources,
    other submissions), hidden where the isolation has a private root. watch: the
    library code whose calls to report (`watch.targets`).
    """
    run, skip, first_q = Run(), set(), 0
    with Box(isolation, limits, hidden) as box, _subreaper():
        for _ in range(len(cells) + len(questions) + 2):  # each attempt gets past one step
            steps = [("cell", i) for i, _ in cells if i not in skip] + \
                    [("case", q, c) for q in range(first_q, len(questions))
                     for c in range(len(questions[q]["checks"]))]
            job = {"cells": [[i, s] for i, s in cells if i not in skip], "questions": questions,
                   "first_question": first_q, "cell_timeout_s": limits.cell_timeout_s,
                   "question_timeout_s": limits.question_timeout_s, "watch": list(watch)}
            done, reason, position = _attempt(job, steps, run, limits, box)
            if done or position >= len(steps) or run.setup_error:
                run.finished = done
                break
            step = steps[position]
            if step[0] == "cell":
                run.cell_errors[step[1]] = reason
                skip.add(step[1])
            else:
                q, c = step[1], step[2]
                for rest in range(c, len(questions[q]["checks"])):
                    run.outcomes[(q, rest)] = {"error": reason}
                first_q = q + 1
    return run


# ---- one attempt: a keeper, its worker, their reports ------------------------------------------
class KeeperHandle:
    """The grader's end of one keeper: its process and its status pipe."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, control_fd: int) -> None:
        self.proc, self.status_fd, self.control_fd = proc, status_fd, control_fd
        self.events: list[dict] = []
        self.buffer, self.closed = b"", False

    def read(self, until, timeout: float) -> dict | None:
        """Status events until one satisfies `until`; None on timeout or when the pipe closes."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((e for e in self.events if until(e)), None)
            if found is not None or self.closed:
                return found
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.status_fd], [], [], wait)[0]:
                return None
            chunk = os.read(self.status_fd, 1 << 16)
            self.closed = not chunk
            *lines, self.buffer = (self.buffer + chunk).split(b"\n")
            self.events += [e for e in map(_parse, lines) if e is not None]

    def worker_exit(self, timeout: float) -> int | None:
        event = self.read(lambda e: "worker" in e or "setup_error" in e, timeout)
        return event.get("worker") if event else None

    @property
    def setup_error(self) -> str | None:
        return next((e["setup_error"] for e in self.events if "setup_error" in e), None)

    def stop(self) -> int:
        """Tell the keeper to end it all; the number of processes that may have survived."""
        os.close(self.control_fd)
        done = self.read(lambda e: "done" in e, STOP_TIMEOUT_S)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
        os.close(self.status_fd)
        return int(done.get("survivors", 0)) if done else -1


def _attempt(job, steps, run: Run, limits: Limits, box: Box) -> tuple[bool, str, int]:
    """Start one keeper and read its worker's reports. Returns (finished, why it stopped, step)."""
    channel_r, channel_w = os.pipe()
    status_r, status_w = os.pipe()
    control_r, control_w = os.pipe()
    fds = {"channel": channel_w, "status": status_w, "control": control_r}
    before = children()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", box.keeper_boot, json.dumps(box.config(fds))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=tuple(fds.values()), cwd="/", env=box.keeper_env, start_new_session=True)
    except BaseException:
        for fd in (channel_r, status_r, control_w):
            os.close(fd)
        raise
    finally:
        for fd in fds.values():
            os.close(fd)
    handle = KeeperHandle(proc, status_r, control_w)
    try:
        _send(proc, job)
        return _read_reports(handle, channel_r, steps, run, limits)
    finally:
        os.close(channel_r)
        survivors = handle.stop()
        run.setup_error = run.setup_error or handle.setup_error
        if survivors != 0:  # the keeper died or could not finish: clean up after it
            survivors = _sweep(before | {proc.pid})
        run.survivors += survivors


def _send(proc: subprocess.Popen, job: dict) -> None:
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the worker died at once; the reader reports it


def _read_reports(handle: KeeperHandle, fd: int, steps, run: Run, limits) -> tuple[bool, str, int]:
    position, buffer, received = 0, b"", 0
    deadline = time.monotonic() + STARTUP_S + _budget(steps, 0, limits)
    while True:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return False, _timeout_reason(steps, position, limits), position
        if not select.select([fd], [], [], wait)[0]:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return False, _exit_reason(handle), position
        received += len(chunk)
        buffer += chunk
        if received > MAX_CHILD_BYTES or (b"\n" not in buffer and len(buffer) > MAX_LINE_BYTES):
            return False, "stopped: it returned too much data", position
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = _parse(line)
            if event is not None and event.get("e") == "end" and position >= len(steps):
                return True, "", position
            if event is None or position >= len(steps) or not _matches(event, steps[position]):
                return False, "stopped: the grader lost track of the submission's process", position
            _record(event, run)
            position += 1
            if position < len(steps) and not _same_question(steps[position - 1], steps[position]):
                deadline = time.monotonic() + _budget(steps, position, limits)


def _budget(steps, position, limits) -> float:
    if position >= len(steps):
        return limits.slack_s
    timeout = limits.cell_timeout_s if steps[position][0] == "cell" else limits.question_timeout_s
    return timeout + limits.slack_s


def _same_question(a, b) -> bool:
    return a[0] == b[0] == "case" and a[1] == b[1]


def _parse(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _matches(event: dict, step: tuple) -> bool:
    if step[0] == "cell":
        return event.get("e") == "cell" and event.get("i") == step[1]
    return event.get("e") == "case" and (event.get("q"), event.get("c")) == step[1:]


def _record(event: dict, run: Run) -> None:
    names = event.get("forbidden")
    names = names[:MAX_NAMES] if isinstance(names, list) else []
    if event["e"] == "cell":
        if event.get("error") is not None:
            run.cell_errors[event["i"]] = str(event["error"])
        for hit in (h for h in names if isinstance(h, list) and len(h) == 2):
            run.cell_forbidden.setdefault(hit[1], set()).add(str(hit[0]))
    else:
        got = {"got": event["got"]} if "got" in event else {"error": str(event.get("error"))}
        run.outcomes[(event["q"], event["c"])] = {**got, "forbidden": sorted(map(str, names))}


def _timeout_reason(steps, position, limits) -> str:
    if position < len(steps) and steps[position][0] == "cell":
        return f"stopped: the cell ran past its time limit of {limits.cell_timeout_s:g} s"
    return f"stopped: the question ran past its time limit of {limits.question_timeout_s:g} s"


def _exit_reason(handle: KeeperHandle) -> str:
    code = handle.worker_exit(timeout=2)
    if handle.setup_error:
        why = handle.setup_error
        return f"stopped: the grader could not start the submission's process ({why})"
    if code is None:
        return "stopped: the submission closed the grader's channel"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        return f"stopped: the process was killed by signal {name} (out of memory?)"
    return f"stopped: the process exited with status {code} (os._exit or a crash)"


# ---- the grader's own safety net ----------------------------------------------------------------
@contextlib.contextmanager
def _subreaper():
    """While grading, orphans whose keeper died come back to the grader rather than to init."""
    try:
        previous = keeper.get_subreaper()
        keeper.prctl(keeper.PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            keeper.prctl(keeper.PR_SET_CHILD_SUBREAPER, previous)


def children() -> set[int]:
    """The grader's own child processes."""
    me = os.getpid()
    return {pid for pid, parent in keeper.parents().items() if parent == me}


def _sweep(known: set[int]) -> int:
    """Kill the grader's children (and theirs) that it did not start itself; how many remain."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while True:
        strays = children() - known
        found = [p for pid in strays for p in [pid, *keeper.descendants(pid)]]
        if not found:
            return 0
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in strays:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            return len(found)
        time.sleep(0.001)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

