"""How long `import llmperf` takes in a fresh interpreter, and what it pulls in.

Budget: under 0.5 s, without torch or matplotlib. Each sample is a new Python
process; the import is timed inside it, so interpreter start-up is excluded.
Writes benchmarks/results/import_time.json and .md.
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROBE = ("import sys, time; t = time.perf_counter(); import llmperf; "
         "dt = time.perf_counter() - t; "
         "print(dt, int('torch' in sys.modules), int('matplotlib' in sys.modules))")


def sample() -> tuple[float, bool, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    seconds, torch_loaded, mpl_loaded = out.stdout.split()
    return float(seconds), torch_loaded == "1", mpl_loaded == "1"


def main(repeat: int = 15) -> None:
    samples = [sample() for _ in range(repeat)]
    times = sorted(s[0] for s in samples)
    result = {
        "benchmark": "import llmperf",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "repeat": repeat,
        "median_s": statistics.median(times),
        "min_s": times[0],
        "max_s": times[-1],
        "imports_torch": any(s[1] for s in samples),
        "imports_matplotlib": any(s[2] for s in samples),
        "budget_s": 0.5,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import_time.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "import_time.md").write_text(
        f"# import llmperf\n\nMedian {result['median_s'] * 1e3:.1f} ms over {repeat} fresh "
        f"interpreters (min {result['min_s'] * 1e3:.1f} ms, max {result['max_s'] * 1e3:.1f} ms); "
        f"budget 500 ms. torch imported: {result['imports_torch']}; matplotlib imported: "
        f"{result['imports_matplotlib']}. Python {result['python']}.\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
