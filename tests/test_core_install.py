"""`pip install .` without extras: numpy is the only third-party package the analytic API and
the `llmperf` command's look-ups (list, estimate, layers, --version) need."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run the analytic API and the simulator with every third-party import refused except numpy's.
ONLY_NUMPY = r"""
import importlib.abc, sys
allowed = set(sys.stdlib_module_names) | {"numpy", "llmperf", "_distutils_hack"}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in allowed:
            raise ImportError(f"{name} is not installed in a core install")
sys.meta_path.insert(0, Refuse())
import llmperf as lp
from llmperf.serving import LinearStepTime, Request, simulate
assert round(lp.get_accelerator("A10").ridge_point("fp16"), 1) == 208.3
print(lp.step_costs("llama-2-7b", "decode", 1, 2048).on("A10").time_s > 0)
print(lp.simple_latency("llama-2-7b", "A10", 350, 150).total_s > 0)
run = simulate([Request(0.0, 8, 3)], policy="continuous", max_batch=1,
               step_time=LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0))
print(run.makespan_s == 3.0)
"""


# The command's look-ups, under the same refusal.
CLI_WITH_NUMPY_ONLY = ONLY_NUMPY.split("import llmperf as lp")[0] + r"""
import contextlib, io
from llmperf.cli import main
for argv in (["list", "gpus"], ["list", "model"],
             ["estimate", "llama-2-7b", "A10", "--prompt-tokens", "350", "--output-tokens", "150"],
             ["layers", "llama-2-7b", "--phase", "decode", "--seq-len", "2048"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
assert main(["estimate", "llama-2-70b", "A10", "--prompt-tokens", "1", "--output-tokens", "1"]) == 1
try:
    main(["--version"])
except SystemExit as done:
    assert done.code == 0
print("cli ok")
"""


def test_core_dependencies_are_numpy_only():
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)\]", text, flags=re.S | re.M).group(1)
    names = [re.match(r"[A-Za-z0-9_.-]+", dep).group(0) for dep in re.findall(r'"([^"]+)"', block)]
    assert names == ["numpy"]


def test_analytic_api_runs_with_numpy_alone():
    out = subprocess.run([sys.executable, "-c", ONLY_NUMPY], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_the_commands_look_ups_run_with_numpy_alone():
    out = subprocess.run([sys.executable, "-c", CLI_WITH_NUMPY_ONLY], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "cli ok"
