"""(a) This machine's roofline from llmperf.measured.host.measure_host: peak FLOP/s per dtype,
bandwidth.

Run: .venv/bin/python benchmarks/host_roofline.py
"""
from _common import write

from llmperf.units import format_bandwidth, format_bytes, format_flop_rate


def main() -> None:
    from llmperf.measured.measure import measure_host

    acc = measure_host()
    rows = "\n".join(f"| {d} | {format_flop_rate(p)} | {acc.ridge_point(d):.1f} |"
                     for d, p in acc.peak_flops.items())
    summary = (f"# Host roofline\n\n{acc.name}\n\n| dtype | peak matmul | ridge point (FLOP/B) |\n"
               f"|---|---|---|\n{rows}\n\nMemory bandwidth: {format_bandwidth(acc.mem_bandwidth)}; "
               f"memory: {format_bytes(acc.mem_capacity)}.\n\nHow: {acc.notes}.")
    write("host_roofline", {"name": acc.name, "peak_flops": dict(acc.peak_flops),
                            "mem_bandwidth": acc.mem_bandwidth, "mem_capacity": acc.mem_capacity,
                            "ridge_points": {d: acc.ridge_point(d) for d in acc.peak_flops},
                            "notes": acc.notes}, summary)


if __name__ == "__main__":
    main()
