"""`import llmperf` stays light (no torch, no matplotlib), and no module imports itself back."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llmperf"


def test_import_does_not_pull_in_torch_or_matplotlib():
    code = ("import sys, llmperf; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """llmperf modules that `path` imports anywhere in its code (top level or in a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module if not node.level else (
                f"{base}.{node.module}" if node.module else base)
            # `from . import spec` names the module spec; `from .x import f` names x.
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search, each as the modules along it."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_graph_sees_known_imports():
    graph = import_graph()
    assert "llmperf.measured.timing" in graph["llmperf.measured.host"]
    assert "llmperf.measured.model" in graph["llmperf.measured.generate"]
    assert "llmperf.measured.host" not in graph["llmperf.measured.timing"]


def test_cycle_search_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_llmperf_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


TORCH_FREE = ("analytic", "serving")


def torch_free_modules() -> list[str]:
    """Every module under the torch-free folders, found by walking them (no list kept by hand)."""
    return sorted(module_name(p) for folder in TORCH_FREE for p in (PACKAGE / folder).rglob("*.py"))


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the modules outside llmperf that `path` imports anywhere."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_the_walk_finds_every_torch_free_module():
    found = torch_free_modules()
    assert "llmperf.analytic.cost" in found and "llmperf.serving.scheduler" in found
    assert len(found) == sum(len(list((PACKAGE / f).rglob("*.py"))) for f in TORCH_FREE)


def test_analytic_and_serving_never_import_torch_even_inside_functions():
    offenders = {module_name(p): sorted(third_party_imports(p) & {"torch", "matplotlib"})
                 for folder in TORCH_FREE for p in (PACKAGE / folder).rglob("*.py")}
    assert {m: found for m, found in offenders.items() if found} == {}


def test_analytic_and_serving_reach_no_measured_or_trained_module():
    graph = import_graph()
    reached, todo = set(), list(torch_free_modules())
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert sorted(m for m in reached if m.startswith(("llmperf.measured", "llmperf.trained",
                                                      "llmperf.grading", "llmperf.plots"))) == []


def test_importing_every_torch_free_module_loads_no_torch():
    modules = torch_free_modules()
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_in_measured_imports_trained():
    arrows = {m: sorted(t for t in targets if t.startswith("llmperf.trained"))
              for m, targets in import_graph().items() if m.startswith("llmperf.measured")}
    assert {m: t for m, t in arrows.items() if t} == {}


def test_every_module_of_the_package_imports():
    # a module can break alone (a name it imports was moved) while nothing else imports it
    import importlib
    for path in sorted(PACKAGE.rglob("*.py")):
        importlib.import_module(module_name(path))
