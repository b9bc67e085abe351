"""Collectives over torch.distributed on this machine, and the alpha-beta model fitted to them.

All-reduce, all-gather and all-to-all with gloo (processes on this machine's CPUs, talking
over TCP on 127.0.0.1) at world sizes 2 and 4, message sizes 4 B to 64 MiB (powers of 4;
`message_bytes` is the whole tensor, as in `llmperf.collective_time`), fp32 tensors, one
intra-op thread per rank (`llmperf.measured.collectives.measure_collectives`: median over
REPEATS calls, each after a barrier, of the slowest rank's time). For each op and world size,
`llmperf.analytic.collectives.fit_alpha_beta` fits alpha (seconds per message) and B (one-way
bytes/s) by least squares on the relative error, and the table gives the fit's largest
relative error over the sizes. Also: what starting a group costs (`launch_overhead`: the fork
server's first start, then later launches).

World size 4 on a 2-core machine runs two ranks per core: its times include waiting for a
core, which is part of what the fitted constants then describe.

Run: .venv/bin/python benchmarks/collectives.py [--quick]
(--quick: sizes up to 1 MiB, 3 repeats, printed and not written, as a smoke test.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict

from _common import write  # also puts the checkout on sys.path

from llmperf.analytic.collectives import collective_time, fit_alpha_beta
from llmperf.measured.collectives import DEFAULT_SIZES_BYTES, measure_collectives
from llmperf.measured.distributed import launch_overhead
from llmperf.units import format_bytes, format_seconds

OPS = ("all_reduce", "all_gather", "all_to_all")
WORLD_SIZES, REPEATS, WARMUP, LAUNCHES = (2, 4), 10, 2, 5
QUICK = {"sizes": tuple(s for s in DEFAULT_SIZES_BYTES if s <= 2**20), "repeats": 3}


def fit(rows) -> dict:
    """alpha and one-way B of one op at one world size, and the fit's worst relative error."""
    link = fit_alpha_beta([r.message_bytes for r in rows], [r.median_s for r in rows],
                          rows[0].op, rows[0].world_size, name=f"gloo {rows[0].op}")
    errors = [collective_time(r.op, r.message_bytes, r.world_size, link) / r.median_s - 1
              for r in rows]
    return {"op": rows[0].op, "world_size": rows[0].world_size, "alpha_s": link.latency_s,
            "one_way_bytes_per_s": link.one_way,
            "worst_relative_error": max(errors, key=abs)}


def summary(rows, fits, launches, sizes, repeats, load_start) -> str:
    sizes = sorted({r.message_bytes for r in rows})
    lines = ["# Collectives over gloo on this machine, and the fitted alpha-beta model", "",
             f"Median of {repeats} calls (slowest rank, after a barrier), fp32, one thread per "
             "rank. A size too small to give each rank a whole element is timed at the "
             "smallest that does.", "",
             "| op | ranks | alpha | B one way | worst fit error |", "|---|---:|---:|---:|---:|"]
    for f in fits:
        lines.append(f"| {f['op']} | {f['world_size']} | {format_seconds(f['alpha_s'])} | "
                     f"{format_bytes(f['one_way_bytes_per_s'])}/s | "
                     f"{100 * f['worst_relative_error']:+.0f} % |")
    lines += ["", "Measured medians:", "",
              "| size | " + " | ".join(f"{op} p={p}" for p in WORLD_SIZES for op in OPS) + " |",
              "|---:|" + "---:|" * (len(OPS) * len(WORLD_SIZES))]
    for size in sizes:
        cells = []
        for p in WORLD_SIZES:
            for op in OPS:
                hit = [r.median_s for r in rows if (r.op, r.world_size, r.message_bytes)
                       == (op, p, size)]
                cells.append(format_seconds(hit[0]) if hit else "")
        lines.append(f"| {format_bytes(size, binary=True, digits=0)} | " + " | ".join(cells) + " |")
    first = launches[0]
    later = statistics.median(r.wall_s for r in launches[1:])
    lines += ["", f"Starting a group of 2 ranks ({first.start_method}): "
              f"{format_seconds(first.wall_s)} for the first launch (it may start the fork "
              f"server), then a median of {format_seconds(later)} per launch "
              f"({len(launches) - 1} launches). Load average at the start: "
              f"{tuple(round(x, 2) for x in load_start)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: sizes up to 1 MiB, 3 repeats, nothing written")
    quick = parser.parse_args().quick
    sizes, repeats = ((QUICK["sizes"], QUICK["repeats"]) if quick
                      else (DEFAULT_SIZES_BYTES, REPEATS))
    load_start = os.getloadavg()
    launches = launch_overhead(2, repeats=LAUNCHES)
    rows = []
    for p in WORLD_SIZES:
        rows += measure_collectives(OPS, p, sizes, repeats=repeats, warmup=WARMUP)
    fits = [fit([r for r in rows if (r.op, r.world_size) == (op, p)])
            for p in WORLD_SIZES for op in OPS]
    text = summary(rows, fits, launches, sizes, repeats, load_start)
    data = {"ops": OPS, "world_sizes": WORLD_SIZES, "sizes_bytes": list(sizes),
            "repeats": repeats, "warmup": WARMUP, "rows": [asdict(r) for r in rows],
            "fits": fits, "launch_wall_s": [r.wall_s for r in launches],
            "launch_startup_s": [r.startup_s for r in launches],
            "start_method": launches[0].start_method, "load_average_start": load_start}
    if quick:
        json.dumps(data)
        print(text + "\n(--quick: benchmarks/results/collectives.* left as they were)")
        return
    write("collectives", data, text)


if __name__ == "__main__":
    main()
