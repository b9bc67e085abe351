"""What a submission is contained in: the isolation modes, the limits, and the folders.

The isolations, strongest first:

- "user+namespaces" (the grader runs as root): the submission runs as `nobody`, in
  PID, mount, network, IPC and UTS namespaces of its own, in a private root that
  holds only the system folders, Python and a copy of llmperf, read-only.
- "user" (root, where namespaces are refused, as in most containers): it runs as
  `nobody`; it reads what file permissions let `nobody` read.
- "namespaces" (an ordinary user, where the kernel lets one create a user
  namespace): the same namespaces and private root, under this user's own id.
- "none": it runs as the grader's own user, with limits but no isolation.

In every mode the keeper kills every process the submission started before the
grader writes anything. Which mode works here is found by `isolation.choose_isolation`.

The folders of one run:

    BASE/lib/llmperf   a copy of the package: all the submission may import besides
                       Python's own library and installed packages (never the
                       repository, which holds the instructor sources)
    BASE/work          its working folder, HOME and TMPDIR (a private tmpfs of
                       `workdir_mb` under namespaces)
    BASE/root          where namespaces mount its private root

The worker's sys.path is the copy, the standard library and site-packages, and
nothing else; `python -I -S` keeps the environment, the current folder and .pth
files (an editable install's pointer to the repository) out of it.
"""
from __future__ import annotations

import functools
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SANDBOX_USER = "nobody"
MODES = ("user+namespaces", "user", "namespaces", "none")
CHOICES = ("auto", *MODES)
PACKAGE = Path(__file__).resolve().parents[1]  # .../llmperf
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
NPROC = 256
INSIDE_ID = 1000  # the id a grader running as root in a user namespace maps itself to


@dataclass(frozen=True)
class Limits:
    """Time, memory and disk a submission gets."""

    cell_timeout_s: float = 10.0
    question_timeout_s: float = 10.0
    memory_mb: int = 2048
    file_mb: int = 16
    workdir_mb: int = 256  # its working folder, where namespaces give it one of its own
    slack_s: float = 2.0


# ---- the isolations -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Isolation:
    mode: str
    uid: int | None = None  # the user the worker runs as, where it is another one
    gid: int | None = None

    @property
    def namespaces(self) -> bool:
        return self.mode in ("user+namespaces", "namespaces")

    @property
    def other_user(self) -> bool:
        return self.mode in ("user+namespaces", "user")

    def describe(self) -> str:
        """One line for the grader's output."""
        return f"{self.mode} ({DESCRIPTIONS[self.mode]})"

    def record(self) -> dict:
        """What results.json keeps of it."""
        return {"mode": self.mode, "other_user": SANDBOX_USER if self.other_user else None,
                "namespaces": self.namespaces, "network": "cut" if self.namespaces else "open",
                "description": DESCRIPTIONS[self.mode]}


DESCRIPTIONS = {
    "user+namespaces": f"the submission runs as {SANDBOX_USER} in its own PID, mount and network "
                       "namespaces, and sees only Python and llmperf, read-only",
    "user": f"the submission runs as {SANDBOX_USER}; it can read what file permissions let "
            f"{SANDBOX_USER} read; network open",
    "namespaces": "the submission runs in its own user, PID, mount and network namespaces, and "
                  "sees only Python and llmperf, read-only",
    "none": "the submission runs as this user, unisolated: it can read and write what this "
            "user can, and signal this user's processes",
}


def warning(isolation: Isolation, requested: str = "auto") -> str | None:
    """What an instructor should know about this isolation, or None."""
    if isolation.mode != "none":
        return None
    why = "--isolation none was asked for" if requested == "none" else \
        "no isolation was available"
    return (f"{why}: the submission can read, write and signal whatever this user can. Grade "
            "untrusted submissions as root (sudo), or in a container as Gradescope does, or "
            "where the kernel allows unprivileged user namespaces")


def candidates(euid: int) -> tuple[str, ...]:
    """The modes to try, strongest first, for a grader running as `euid`."""
    return MODES if euid == 0 else ("namespaces", "none")


def sandbox_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(SANDBOX_USER)
    return entry.pw_uid, entry.pw_gid


def exposed(path: Path) -> str | None:
    """What a user other than the owner may do to `path`: "read", "write to", or None.

    Mode bits only: every folder above it searchable by others, and the path itself
    readable (or writable) by them.
    """
    path = Path(path).resolve()
    try:
        for parent in reversed(path.parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return None
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_IWOTH:
        return "write to"
    return "read" if mode & stat.S_IROTH else None


def exposure_warnings(isolation: Isolation, paths: dict[str, Path | None]) -> list[str]:
    """With another user and no namespaces: which of `paths` (label: path) that user can reach."""
    if isolation.mode != "user":
        return []
    found = [(label, path, exposed(path)) for label, path in paths.items() if path is not None]
    return [f"{SANDBOX_USER} can {how} the {label} {path}: make it its owner's only "
            f"(chmod -R go-rwx {path}), as run_autograder does on Gradescope"
            for label, path, how in found if how]


# ---- the folders --------------------------------------------------------------------------------
@functools.cache
def python_paths() -> tuple[str, ...]:
    """The standard library and site-packages folders of the Python that runs the grader.

    The grader's own sys.path entries under the interpreter's base prefixes (the
    standard library, its zip and lib-dynload), then the site-packages folders.
    """
    import site

    bases = {os.path.abspath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    stdlib = [p for p in sys.path if p and _under(os.path.abspath(p), bases)]
    found = [*stdlib, *site.getsitepackages()]
    return tuple(dict.fromkeys(os.path.abspath(p) for p in found if os.path.exists(p)))


def _under(path: str, folders: set[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


@functools.cache
def system_binds() -> tuple[str, ...]:
    """What a private root shows, read-only: system folders and the interpreter's prefixes."""
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)), *python_paths()]
    paths = [p for p in SYSTEM_DIRS if os.path.lexists(p)]
    paths += [os.path.abspath(p) for p in python if os.path.exists(p)]
    return tuple(p for p in sorted(set(paths), key=len) if not _inside_another(p, paths))


def _inside_another(path: str, paths: list[str]) -> bool:
    return any(other != path and path.startswith(other.rstrip("/") + "/") for other in paths)


def worker_env(workdir: str) -> dict[str, str]:
    """The whole environment of the submission's process."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
            # One thread: OpenBLAS (numpy's) and torch size their thread pools from
            # OMP_NUM_THREADS, and otherwise start one thread per core. Each thread counts
            # against RLIMIT_NPROC (NPROC, for the whole user where the worker runs as
            # another one) and reserves address space under RLIMIT_AS: `import numpy`
            # takes about 40 MB more per extra thread, so on a 64-core grader the pool
            # alone would pass the 2 GiB default of `memory_mb` before the submission's
            # first line. The graded calls are small; more threads would not speed them up,
            # and one keeps grading runs side by side from fighting over the cores.
            "OMP_NUM_THREADS": "1"}


class Box:
    """The temporary folders of one submission's run; removed on exit."""

    def __init__(self, isolation: Isolation, limits: Limits, hidden: tuple[Path, ...] = ()) -> None:
        self.isolation, self.limits = isolation, limits
        self.hidden = tuple(str(Path(p).resolve()) for p in hidden if p is not None)

    def __enter__(self) -> Box:
        self.base = Path(tempfile.mkdtemp(prefix="llmperf-grade-"))
        try:
            self._fill()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _fill(self) -> None:
        self.base.chmod(0o755)  # the sandbox user walks through it to lib/ and work/
        self.lib, self.workdir, self.root = (self.base / n for n in ("lib", "work", "root"))
        shutil.copytree(PACKAGE, self.lib / "llmperf",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.workdir.mkdir(mode=0o700)
        self.root.mkdir(mode=0o700)
        if self.isolation.mode == "user":
            os.chown(self.workdir, self.isolation.uid, self.isolation.gid)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def keeper_boot(self) -> str:
        """The keeper's command: keeper.py from the copy, as a script, with no package around it."""
        grading = str(self.lib / "llmperf" / "grading")
        return (f"import sys; sys.path[:] = {list(python_paths())!r} + [{grading!r}]; "
                "import keeper; keeper.main()")

    @property
    def worker_boot(self) -> str:
        return (f"import sys; sys.path[:] = [{str(self.lib)!r}] + {list(python_paths())!r}; "
                "from llmperf.grading.worker import main; main()")

    @property
    def keeper_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def ids(self) -> tuple[int, int]:
        """The user and group the worker runs as, as the confined child sees them."""
        if self.isolation.other_user:
            return self.isolation.uid, self.isolation.gid
        if self.isolation.mode == "namespaces":
            return os.geteuid() or INSIDE_ID, os.getegid() or INSIDE_ID
        return os.geteuid(), os.getegid()

    def config(self, fds: dict[str, int]) -> dict:
        """What the keeper needs to confine and start the worker (see `keeper.become_worker`)."""
        uid, gid = self.ids()
        limits = self.limits
        return {
            "mode": self.isolation.mode, "fds": fds, "python": sys.executable,
            "argv": [sys.executable, "-I", "-S", "-B", "-c", self.worker_boot,
                     str(fds["channel"])],
            "env": worker_env(str(self.workdir)), "workdir": str(self.workdir),
            "root": str(self.root), "binds": [*system_binds(), str(self.lib)],
            "hide": list(self.hidden), "uid": uid, "gid": gid, "inside_uid": uid,
            "inside_gid": gid, "workdir_mb": limits.workdir_mb,
            "limits": {"as": limits.memory_mb << 20, "fsize": limits.file_mb << 20, "core": 0,
                       "nproc": None if self.isolation.mode == "none" else NPROC},
        }
