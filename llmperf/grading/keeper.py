"""The keeper: a trusted process between the grader and the submission, outliving neither.

The grader starts one keeper per attempt. The keeper makes itself a child
subreaper (every orphan below it comes back to it, whatever session or double
fork it used), enters the namespaces of the chosen isolation, and forks the
child that confines itself (`become_worker`) and execs the worker. When the
grader closes the control pipe, or dies, the keeper kills every process below
it, waits until /proc shows none, reports on the status pipe and exits.

Status lines (JSON): {"worker": exit code, negative for a signal},
{"setup_error": why}, and last {"done": true, "survivors": n}.

It runs as a script from the package copy's grading folder (`box.Box.keeper_boot`),
not as part of the package: importing llmperf would start numpy's threads, and a
process with threads cannot enter a new user namespace. So this file imports the
standard library only, and holds the few Linux system calls it needs (through
ctypes), which the grader's `sandbox` uses too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import resource
import select
import signal
import sys
import time

KILL_TIMEOUT_S = 5.0
DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2"}

# ---- Linux system calls -------------------------------------------------------------------------
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 1 << 14, 1 << 18, 1 << 21
MNT_DETACH = 2

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# statvfs flags that a bind remount must keep (the kernel refuses to clear locked ones)
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
               (os.ST_RELATIME, MS_RELATIME))

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _checked(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, value: int = 0) -> int:
    return _checked(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def get_subreaper() -> int:
    value = ctypes.c_int(0)
    _checked(_libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0), "prctl")
    return value.value


def unshare(flags: int) -> None:
    _checked(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    encode = lambda s: s.encode() if s is not None else None
    result = _libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags),
                         encode(data))
    _checked(result, f"mount {source or fstype} on {target}")


def umount(target: str, flags: int = 0) -> None:
    _checked(_libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {platform.machine()}")
    _checked(_libc.syscall(number, new_root.encode(), put_old.encode()), "pivot_root")


def kept_flags(path: str) -> int:
    """The mount flags of the file system holding `path` that a remount must keep."""
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _KEPT_FLAGS if flags & st)


def parents() -> dict[int, int]:
    """Every visible process and its parent, from /proc (processes that vanish are skipped)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # the name in parentheses may hold spaces
        table[int(name)] = int(fields[1])
    return table


def descendants(pid: int) -> list[int]:
    """Processes below `pid` in the process tree, zombies included, parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in parents().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, ()))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, ()))
    return found


# ---- the keeper ---------------------------------------------------------------------------------
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
    namespaces of its own (`private_root`).
    """
    mode = config["mode"]
    if mode == "user+namespaces":
        unshare(CLONE_NEWPID)
    elif mode == "namespaces":
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER | CLONE_NEWPID)
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
        found = descendants(me)
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
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        enter_namespaces(config)
    except OSError as err:
        status.send(setup_error=f"the keeper cannot enter its namespaces: {err}")
        status.send(done=True, survivors=0)
        os._exit(3)
    child = os.fork()
    if child == 0:
        become_worker(config, status.send)  # never returns
    os.close(fds["channel"])  # the worker's alone: its end of file tells the grader it is gone
    serve(child, fds["control"], status)
    survivors = kill_all(child, status)
    status.send(done=True, survivors=survivors)
    os._exit(0)


# ---- the keeper's child confines itself, then becomes the worker --------------------------------
def become_worker(config: dict, report) -> None:
    """Confine this process as `config` says and exec the worker; never returns.

    In order: a session of its own; with namespaces, a private root that holds only
    what Python needs (system folders, the interpreter, its packages, a copy of
    llmperf, all read-only; a small private working folder; no network); limits;
    another user where there is one; no new privileges; then exec the worker.
    """
    try:
        os.setsid()  # its own process group: kill(0, ...) cannot reach the keeper
        if config["mode"] in ("namespaces", "user+namespaces"):
            private_root(config)
        os.chdir(config["workdir"])
        set_limits(config["limits"])
        if config["mode"] in ("user", "user+namespaces"):
            os.setgroups([])
            os.setresgid(config["gid"], config["gid"], config["gid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.execve(config["python"], config["argv"], config["env"])
    except BaseException as err:  # noqa: B036 (whatever happens, the keeper must hear of it)
        report(setup_error=f"{type(err).__name__}: {err}")
    os._exit(127)


def private_root(config: dict) -> None:
    """Mount, network, IPC and UTS namespaces of its own, and a new root to pivot into."""
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing leaks back out
    root = config["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in config["binds"]:
        place(path, root)
    devices(root)
    os.makedirs(root + "/proc", mode=0o555)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    workdir = root + config["workdir"]
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={config['workdir_mb']}m,mode=700")
    os.chown(workdir, config["uid"], config["gid"])
    for path in config["hide"]:
        if _within(path, config["binds"]) and not _holds(path, config["binds"]):
            hide(root + path)  # elsewhere the new root does not show it at all
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    pivot_root(".", ".")
    umount(".", MNT_DETACH)  # the old root, stacked below, is gone for good
    os.chdir("/")


def place(path: str, root: str) -> None:
    """`path` at the same place in the new root: a symbolic link as such, else read-only."""
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return
    bind(path, target, read_only=True)


def bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept_flags(source))


def devices(root: str) -> None:
    """A minimal /dev: the harmless character devices, a private /dev/shm, fd links."""
    dev = root + "/dev"
    os.makedirs(dev, mode=0o755)
    for name in DEVICES:
        bind("/dev/" + name, f"{dev}/{name}", read_only=False)
    os.makedirs(dev + "/shm", mode=0o777)
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
    for name, target in DEVICE_LINKS.items():
        os.symlink(target, f"{dev}/{name}")


def _within(path: str, folders: list[str]) -> bool:
    return any(path.startswith(f.rstrip("/") + "/") for f in folders)


def _holds(path: str, folders: list[str]) -> bool:
    return any(f == path or f.startswith(path.rstrip("/") + "/") for f in folders)


def hide(target: str) -> None:
    """An empty, read-only stand-in over `target` if the new root shows it."""
    if os.path.isdir(target) and not os.path.islink(target):
        mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")
    elif os.path.isfile(target):
        mount("/dev/null", target, None, MS_BIND)


def set_limits(limits: dict) -> None:
    """Address space, file size, no core dumps, and (for another user) a process count."""
    for name, value in limits.items():
        if value is not None:
            which = getattr(resource, f"RLIMIT_{name.upper()}")
            resource.setrlimit(which, (value, value))
