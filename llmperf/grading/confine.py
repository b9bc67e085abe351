"""The keeper's child confines itself, then becomes the worker that runs the submission.

In order: a session of its own; with namespaces, a private root that holds only what
Python needs (system folders, the interpreter, its packages, a copy of llmperf, all
read-only; a small private /tmp-like working folder; no network); limits; another
user where there is one; no new privileges; then exec the worker.

Like `keeper`, it imports only the standard library and `linux`.
"""
from __future__ import annotations

import os
import resource

if __package__:
    from . import linux
else:  # inside the keeper process (see keeper.py)
    import linux

DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2"}


def become_worker(config: dict, report) -> None:
    """Confine this process as `config` says and exec the worker; never returns."""
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
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        os.execve(config["python"], config["argv"], config["env"])
    except BaseException as err:  # noqa: B036 (whatever happens, the keeper must hear of it)
        report(setup_error=f"{type(err).__name__}: {err}")
    os._exit(127)


def private_root(config: dict) -> None:
    """Mount, network, IPC and UTS namespaces of its own, and a new root to pivot into."""
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWIPC
                  | linux.CLONE_NEWUTS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing leaks back out
    root = config["root"]
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m,mode=755")
    for path in config["binds"]:
        place(path, root)
    devices(root)
    os.makedirs(root + "/proc", mode=0o555)
    linux.mount("proc", root + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    workdir = root + config["workdir"]
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    linux.mount("tmpfs", workdir, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"size={config['workdir_mb']}m,mode=700")
    os.chown(workdir, config["uid"], config["gid"])
    for path in config["hide"]:
        if _within(path, config["binds"]) and not _holds(path, config["binds"]):
            hide(root + path)  # elsewhere the new root does not show it at all
    linux.mount(None, root, None, linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID
                | linux.MS_NODEV)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)  # the old root, stacked below, is gone for good
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
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if read_only:
        flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.kept_flags(source)
        linux.mount(None, target, None, flags)


def devices(root: str) -> None:
    """A minimal /dev: the harmless character devices, a private /dev/shm, fd links."""
    dev = root + "/dev"
    os.makedirs(dev, mode=0o755)
    for name in DEVICES:
        bind("/dev/" + name, f"{dev}/{name}", read_only=False)
    os.makedirs(dev + "/shm", mode=0o777)
    linux.mount("tmpfs", dev + "/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                "size=16m,mode=1777")
    for name, target in DEVICE_LINKS.items():
        os.symlink(target, f"{dev}/{name}")


def _within(path: str, folders: list[str]) -> bool:
    return any(path.startswith(f.rstrip("/") + "/") for f in folders)


def _holds(path: str, folders: list[str]) -> bool:
    return any(f == path or f.startswith(path.rstrip("/") + "/") for f in folders)


def hide(target: str) -> None:
    """An empty, read-only stand-in over `target` if the new root shows it."""
    if os.path.isdir(target) and not os.path.islink(target):
        linux.mount("tmpfs", target, "tmpfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
                    "size=4k,mode=555")
    elif os.path.isfile(target):
        linux.mount("/dev/null", target, None, linux.MS_BIND)


def set_limits(limits: dict) -> None:
    """Address space, file size, no core dumps, and (for another user) a process count."""
    for name, value in limits.items():
        if value is not None:
            which = getattr(resource, f"RLIMIT_{name.upper()}")
            resource.setrlimit(which, (value, value))
