"""Watching for the library calls a question forbids: which ones the submission's own code made.

An instructor writes `question(..., forbid=["llmperf.max_batch_size"])`. The grader
turns each name into *targets* (`targets`): the code objects it names, by file (relative
to the llmperf package), function name and first line; a module names every function in
its file (a package, every file in its folder). The worker, which runs a copy of the same
package, installs a `Watcher` while cells run and checks are called: a trace function that
notes each call of a target whose caller is the submission's own code (a frame compiled
from one of its cells, `<cell N>`). Calls that the library makes internally, from a
function the question allows, are not counted.

The watcher reports; it changes nothing: the forbidden functions still run and return.
The grader decides, per question, whether a call costs points. A determined student can
hide a call (a thread, `sys.settrace`); the watch catches the honest shortcut.

Standard library only: the submission's process imports this module.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import types
from pathlib import Path

CELL_PREFIX = "<cell "
PACKAGE_NAME = "llmperf"


# ---- the grader's side: names to targets --------------------------------------------------------
def targets(label: str) -> list[tuple[str, str, str, int]]:
    """The code that `label` names, as (label, file, function name, first line) tuples.

    file is relative to the llmperf package, with "/" separators; a module's targets have
    the function name "" (any function in the file), a package's a file ending in "/".
    ValueError, naming `label`, when it names nothing in llmperf.
    """
    if not (isinstance(label, str) and label.startswith(PACKAGE_NAME + ".")):
        raise ValueError(f"forbid: each name must start with 'llmperf.', got {label!r}")
    obj = _lookup(label)
    if isinstance(obj, types.ModuleType):
        path = Path(obj.__file__).resolve()
        relative = _relative(label, path)
        if path.name == "__init__.py":
            return [(label, relative.rsplit("/", 1)[0] + "/", "", 0)]
        return [(label, relative, "", 0)]
    codes = _codes(obj)
    if not codes:
        raise ValueError(f"forbid: {label!r} is a {type(obj).__name__}, not a function, method, "
                         "property, class or module of llmperf")
    return [(label, _relative(label, Path(c.co_filename).resolve()), c.co_name, c.co_firstlineno)
            for c in codes]


def _lookup(label: str):
    parts = label.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not (module == err.name or module.startswith(f"{err.name}.")):
                raise  # the module exists, but something it imports does not
            continue
        for depth, attribute in enumerate(parts[cut:], start=cut):
            try:
                obj = inspect.getattr_static(obj, attribute)
            except AttributeError:
                raise ValueError(f"forbid: {label!r} names nothing: "
                                 f"{'.'.join(parts[:depth])} has no {attribute!r}") from None
        return obj
    raise ValueError(f"forbid: {label!r} names no module of llmperf")


def _codes(obj) -> list[types.CodeType]:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return [f.__code__ for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
    if isinstance(obj, type):  # a class: the methods written in its body (not generated ones)
        found = [c for member in vars(obj).values() for c in _codes(member)]
        return [c for c in found if Path(c.co_filename).is_file()]
    code = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    return [code] if isinstance(code, types.CodeType) else []


def _relative(label: str, path: Path) -> str:
    package = Path(importlib.import_module(PACKAGE_NAME).__file__).resolve().parent
    try:
        return path.relative_to(package).as_posix()
    except ValueError:
        raise ValueError(f"forbid: {label!r} is defined outside llmperf, in {path}") from None


# ---- the worker's side: noting the calls --------------------------------------------------------
class Watcher:
    """While active (a `with` block), notes calls of the targets made from the submission's cells.

    hits: {(label, index of the cell whose code made the call)}.
    """

    def __init__(self, specs: list) -> None:
        self.by_name: dict[str, list[tuple[str, int, str]]] = {}
        self.files: list[tuple[str, str]] = []  # (file or folder suffix, label): whole modules
        for label, file, name, line in specs:
            suffix = f"/{PACKAGE_NAME}/{file}"
            if name:
                self.by_name.setdefault(name, []).append((suffix, line, label))
            else:
                self.files.append((suffix, label))
        self.by_file: dict[str, tuple[str, ...]] = {}
        self.hits: set[tuple[str, int]] = set()

    def __bool__(self) -> bool:
        return bool(self.by_name or self.files)

    def __enter__(self) -> Watcher:
        if self:
            sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    def labels(self, code: types.CodeType) -> tuple[str, ...]:
        """The targets `code` belongs to."""
        found = tuple(label for suffix, line, label in self.by_name.get(code.co_name, ())
                      if line == code.co_firstlineno and code.co_filename.endswith(suffix))
        if self.files:
            filename = code.co_filename
            if filename not in self.by_file:
                self.by_file[filename] = tuple(
                    label for suffix, label in self.files
                    if (filename.endswith(suffix) if not suffix.endswith("/")
                        else suffix in filename))
            found += self.by_file[filename]
        return found

    def _trace(self, frame, event, arg):  # called for every new frame while active
        found = self.labels(frame.f_code)
        caller = frame.f_back
        if found and caller is not None:
            cell = cell_index(caller.f_code.co_filename)
            if cell is not None:
                self.hits.update((label, cell) for label in found)
        return None

    def take(self) -> list[list]:
        """The hits so far, as [label, cell] pairs (plain data), and forget them."""
        hits, self.hits = sorted(self.hits), set()
        return [list(h) for h in hits]


def cell_index(filename: str) -> int | None:
    """The cell a code object was compiled from, by the worker's file name `<cell N>`."""
    if filename.startswith(CELL_PREFIX) and filename.endswith(">"):
        number = filename[len(CELL_PREFIX):-1]
        return int(number) if number.isdigit() else None
    return None
