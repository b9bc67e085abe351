"""The keeper: a trusted process between the grader and the submission, outliving neither.

The grader starts one keeper per attempt. The keeper makes itself a child
subreaper (every orphan below it comes back to it, whatever session or double
fork it used), enters the namespaces of the chosen isolation, and forks the
child that confines itself (`confine`) and becomes the worker. When the grader
closes the control pipe, or dies, the keeper kills every process below it,
waits until /proc shows none, reports on the status pipe and exits.

Status lines (JSON): {"worker": exit code, negative for a signal},
{"setup_error": why}, and last {"done": true, "survivors": n}.

It runs as a script from a copy of this folder, outside the package (see
`sandbox.KEEPER_BOOT`): it imports the standard library, `linux` and `confine` only.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

if __package__:
    from . import confine, linux
else:  # the keeper process: this folder is on sys.path, the package is not imported
    import confine
    import linux

KILL_TIMEOUT_S = 5.0


class Status:
    """The status pipe to the grader: one JSON object per line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, **event) -> None:
        try:
            os.write(self.fd, (json.dumps(event) + "\n").encode())
        except OSError:
            pass  # the grader is gone; the keeper still cleans up


def enter_namespaces(config: dict) -> None:
    """Namespaces the keeper itself enters, so that the child it forks is their first process.

    As root: a PID namespace. Otherwise: a user namespace (mapping this user to
    `inside_uid`, not root, so the worker holds no capabilities once it runs) and a
    PID namespace owned by it. The child then takes mount, network, IPC and UTS
    namespaces of its own (`confine.private_root`).
    """
    mode = config["mode"]
    if mode == "user+namespaces":
        linux.unshare(linux.CLONE_NEWPID)
    elif mode == "namespaces":
        uid, gid = os.geteuid(), os.getegid()
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWPID)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{config['inside_uid']} {uid} 1")
        _write("/proc/self/gid_map", f"{config['inside_gid']} {gid} 1")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def serve(child: int, control_fd: int, status: Status) -> None:
    """Reap what dies and report the worker's exit, until the control pipe closes."""
    while True:
        ready = select.select([control_fd], [], [], 0.05)[0]
        reap(child, status)
        if ready and not os.read(control_fd, 64):
            return


def reap(child: int, status: Status) -> None:
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == child:
            status.send(worker=os.waitstatus_to_exitcode(code))


def kill_all(child: int, status: Status) -> int:
    """Kill every process below the keeper until none is left; how many could not be."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    me = os.getpid()
    while True:
        found = linux.descendants(me)
        if not found:
            return 0
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap(child, status)
        if time.monotonic() > deadline:
            return len(found)
        time.sleep(0.001)


def main() -> None:
    config = json.loads(sys.argv[-1])
    fds = config["fds"]
    status = Status(fds["status"])
    for fd in (fds["status"], fds["control"]):
        os.set_inheritable(fd, False)  # the worker gets its channel only
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    try:
        enter_namespaces(config)
    except OSError as err:
        status.send(setup_error=f"the keeper cannot enter its namespaces: {err}")
        status.send(done=True, survivors=0)
        os._exit(3)
    child = os.fork()
    if child == 0:
        confine.become_worker(config, status.send)  # never returns
    os.close(fds["channel"])  # the worker's alone: its end of file tells the grader it is gone
    serve(child, fds["control"], status)
    survivors = kill_all(child, status)
    status.send(done=True, survivors=survivors)
    os._exit(0)


if __name__ == "__main__":
    main()
