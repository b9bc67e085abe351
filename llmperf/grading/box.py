"""The folders a submission runs in, and what the keeper is told to build from them.

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
import sys
import tempfile
from pathlib import Path

from .isolation import Isolation

PACKAGE = Path(__file__).resolve().parents[1]  # .../llmperf
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
NPROC = 256
INSIDE_ID = 1000  # the id a grader running as root in a user namespace maps itself to


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


class Box:
    """The temporary folders of one submission's run; removed on exit."""

    def __init__(self, isolation: Isolation, limits, hidden: tuple[Path, ...] = ()) -> None:
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

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def keeper_boot(self) -> str:
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

    def worker_env(self) -> dict[str, str]:
        work = str(self.workdir)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work, "TMPDIR": work,
                "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}

    def ids(self) -> tuple[int, int]:
        """The user and group the worker runs as, as the confined child sees them."""
        if self.isolation.other_user:
            return self.isolation.uid, self.isolation.gid
        if self.isolation.mode == "namespaces":
            return os.geteuid() or INSIDE_ID, os.getegid() or INSIDE_ID
        return os.geteuid(), os.getegid()

    def config(self, fds: dict[str, int]) -> dict:
        """What the keeper needs to confine and start the worker (see keeper and confine)."""
        uid, gid = self.ids()
        limits = self.limits
        return {
            "mode": self.isolation.mode, "fds": fds, "python": sys.executable,
            "argv": [sys.executable, "-I", "-S", "-B", "-c", self.worker_boot,
                     str(fds["channel"])],
            "env": self.worker_env(), "workdir": str(self.workdir), "root": str(self.root),
            "binds": [*system_binds(), str(self.lib)], "hide": list(self.hidden),
            "uid": uid, "gid": gid, "inside_uid": uid, "inside_gid": gid,
            "workdir_mb": limits.workdir_mb,
            "limits": {"as": limits.memory_mb << 20, "fsize": limits.file_mb << 20, "core": 0,
                       "nproc": None if self.isolation.mode == "none" else NPROC},
        }
