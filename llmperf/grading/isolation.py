"""How a submission is contained: the isolations, strongest first, and what each one means.

- "user+namespaces" (the grader runs as root): the submission runs as `nobody`, in
  PID, mount, network, IPC and UTS namespaces of its own, in a private root that
  holds only the system folders, Python and a copy of llmperf, read-only.
- "user" (root, where namespaces are refused, as in most containers): it runs as
  `nobody`; it reads what file permissions let `nobody` read.
- "namespaces" (an ordinary user, where the kernel lets one create a user
  namespace): the same namespaces and private root, under this user's own id.
- "none": it runs as the grader's own user, with limits but no isolation.

In every mode the keeper kills every process the submission started before the
grader writes anything (see `keeper`).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

SANDBOX_USER = "nobody"
MODES = ("user+namespaces", "user", "namespaces", "none")
CHOICES = ("auto", *MODES)


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
