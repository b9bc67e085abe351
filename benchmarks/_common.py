"""Shared by the benchmark scripts: what machine ran them, and writing the results."""
from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent.parent))  # run from a checkout without installing


def machine() -> dict:
    """CPU model, cores, threads, library versions and load average (other work on the host)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1_5_15min": load,
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}


def write(name: str, data: dict, summary: str) -> None:
    """benchmarks/results/NAME.json (everything) and NAME.md (the summary, with the machine)."""
    RESULTS.mkdir(exist_ok=True)
    data = {"machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    m = data["machine"]
    footer = (f"\n\nMachine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
              f"torch {m['torch']}; load average at the end {m['load_average_1_5_15min']} "
              f"({m['date_utc']} UTC). Other jobs may share a machine (the load average says how "
              "busy it was), so medians over interleaved repeats are reported.\n")
    (RESULTS / f"{name}.md").write_text(summary.rstrip() + footer)
    print(summary + footer)
