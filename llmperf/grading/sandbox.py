"""Running a submission in a separate, limited process and collecting what it returns.

The child (`worker`) runs the cells, then the calls, and reports each step on a
pipe. This side enforces the limits the child cannot enforce on itself: if the
child goes quiet past a deadline, dies (os._exit, a crash) or sends garbage, it
is killed, the step it was on is charged with the failure, and a fresh child
takes up the remaining steps, skipping the cell that broke the last one.
"""
from __future__ import annotations

import functools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINE_BYTES = 1 << 20
MAX_CHILD_BYTES = 32 << 20
STARTUP_S = 10.0
NPROC = 256
ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds the llmperf package
BOOT = f"import sys; sys.path.insert(0, {ROOT!r}); from llmperf.grading.worker import main; main()"


@dataclass(frozen=True)
class Limits:
    """Time and memory a submission gets."""

    cell_timeout_s: float = 10.0
    question_timeout_s: float = 10.0
    memory_mb: int = 2048
    file_mb: int = 16
    slack_s: float = 2.0


@dataclass
class Run:
    """What the submission did: why cells failed, and each check's outcome (got or error)."""

    cell_errors: dict[int, str] = field(default_factory=dict)
    outcomes: dict[tuple[int, int], dict] = field(default_factory=dict)
    isolation: str = ""


def run_submission(cells: list[tuple[int, str]], questions: list[dict], limits: Limits) -> Run:
    """Run `cells`, then call each question's checks.

    questions: [{"name", "kind", "checks": [{"args", "kwargs"}]}], in the exercise's order.
    """
    run, skip, first_q = Run(), set(), 0
    workdir = tempfile.mkdtemp(prefix="llmperf-grade-")
    try:
        user = _sandbox_user(workdir)
        for _attempt in range(len(cells) + len(questions) + 2):
            steps = [("cell", i) for i, _ in cells if i not in skip] + \
                    [("case", q, c) for q in range(first_q, len(questions))
                     for c in range(len(questions[q]["checks"]))]
            job = {"cells": [[i, s] for i, s in cells if i not in skip], "questions": questions,
                   "first_question": first_q, "cell_timeout_s": limits.cell_timeout_s,
                   "question_timeout_s": limits.question_timeout_s}
            done, reason, position = _attempt_run(job, steps, run, limits, workdir, user)
            if done or position >= len(steps):
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
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def _attempt_run(job, steps, run, limits, workdir, user) -> tuple[bool, str, int]:
    """Start one child and read its reports. Returns (finished, why it stopped, step reached)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", BOOT, str(write_fd)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,), cwd=workdir,
            env=_environment(workdir), start_new_session=True,
            preexec_fn=lambda: _limit_child(limits, user))
    finally:
        os.close(write_fd)
    try:
        _send(proc, job)
        return _read_reports(proc, read_fd, steps, run, limits)
    finally:
        os.close(read_fd)
        _kill(proc)


def _send(proc: subprocess.Popen, job: dict) -> None:
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the child died at once; the reader reports it


def _read_reports(proc, fd, steps, run, limits) -> tuple[bool, str, int]:
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
            return False, _exit_reason(proc, steps, position), position
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
    if event["e"] == "cell":
        error = event.get("error")
        if error is not None:
            run.cell_errors[event["i"]] = str(error)
    else:
        key = (event["q"], event["c"])
        got = "got" in event
        run.outcomes[key] = {"got": event["got"]} if got else {"error": str(event.get("error"))}


def _timeout_reason(steps, position, limits) -> str:
    if position < len(steps) and steps[position][0] == "cell":
        return f"stopped: the cell ran past its time limit of {limits.cell_timeout_s:g} s"
    return f"stopped: the question ran past its time limit of {limits.question_timeout_s:g} s"


def _exit_reason(proc: subprocess.Popen, steps, position) -> str:
    try:
        code = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "stopped: the submission closed the grader's channel"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        return f"stopped: the process was killed by signal {name} (out of memory?)"
    return f"stopped: the process exited with status {code} (os._exit or a crash)"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _environment(workdir: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "TMPDIR": workdir}


def _sandbox_user(workdir: str) -> tuple[int, int] | None:
    """When the grader runs as root (as on Gradescope), the submission runs as `nobody`:
    it can then neither signal the grader nor write the grader's files. That needs a
    Python and an llmperf that other users may run; without them it stays as it is."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    user = (entry.pw_uid, entry.pw_gid)
    if not _can_run_as(user):
        return None
    os.chown(workdir, *user)
    return user


@functools.cache
def _can_run_as(user: tuple[int, int]) -> bool:
    """Whether `user` can start Python and import the worker (probed once per process)."""
    probe = BOOT.replace("main()", "None")
    try:
        done = subprocess.run([sys.executable, "-I", "-B", "-c", probe], cwd="/",
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30,
                              preexec_fn=lambda: _limit_child(Limits(), user))
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _limit_child(limits: Limits, user: tuple[int, int] | None) -> None:
    """Runs in the child before Python starts: memory, file size and core dump limits."""
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = limits.file_mb << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if user is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))  # counted per user: nobody's
        os.setgroups([])
        os.setgid(user[1])
        os.setuid(user[0])
