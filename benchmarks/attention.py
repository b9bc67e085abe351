"""Attention three ways against N: time and the most tensor memory held at once.

Causal attention over HEADS heads of d = 64 (batch 1), at sequence lengths N, by
- the standard algorithm (`llmperf.measured.kernels.standard_attention`: S and P whole, N x N each),
- the tiled one with the online softmax (`llmperf.measured.kernels.flash_attention`, blocks of
  BLOCK queries and keys, plain PyTorch: it shows the algorithm and its footprint, not a
  fused kernel's speed),
- PyTorch's fused `F.scaled_dot_product_attention` (SDPA).
Time: the median over alternating rounds (the three implementations take turns, so that
a busy moment on a shared machine hits all three). Peak memory: `llmperf.measured.kernels.
peak_tensor_bytes`, beyond the inputs (on a GPU the allocator's counter; on a CPU every
tensor an operator returns, followed until it is freed). The standard algorithm is skipped
where S and P alone would exceed BUDGET. Every output is checked against the standard
algorithm (or SDPA where the standard one is skipped).

Runs on the GPU when there is one (fp16), else on the CPU (fp32).
Run: .venv/bin/python benchmarks/attention.py
"""
import statistics
import time

import torch
import torch.nn.functional as F
from _common import write

from llmperf.measured.kernels import flash_attention, peak_tensor_bytes, standard_attention
from llmperf.measured.measure import benchmark
from llmperf.units import MiB, format_bytes, format_seconds

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TDTYPE = torch.float16 if DEVICE == "cuda" else torch.float32
HEADS, D_HEAD, BLOCK = 4, 64, 128
LENGTHS = (256, 512, 1024, 2048, 4096)
BUDGET = 256 * MiB
ROUNDS = 3

IMPLEMENTATIONS = {
    "standard": lambda q, k, v: standard_attention(q, k, v, causal=True),
    "tiled (llmperf.measured.kernels)": lambda q, k, v: flash_attention(q, k, v, causal=True,
                                                                block_size=BLOCK),
    "SDPA (fused)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
}


def score_matrices_bytes(n: int, element_size: int) -> int:
    """S and P of the standard algorithm: two (HEADS, N, N) tensors."""
    return 2 * HEADS * n * n * element_size


def measure(n: int, gen: torch.Generator) -> list[dict]:
    q, k, v = (torch.randn(1, HEADS, n, D_HEAD, generator=gen).to(DEVICE, TDTYPE)
               for _ in range(3))
    names = [name for name in IMPLEMENTATIONS
             if name != "standard" or score_matrices_bytes(n, q.element_size()) <= BUDGET]
    repeat = 2 if n >= 2048 else 5
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks, errors = {}, {}
    with torch.inference_mode():
        reference = IMPLEMENTATIONS[names[0]](q, k, v).float()
        for name in names:
            peaks[name] = peak_tensor_bytes(IMPLEMENTATIONS[name], q, k, v)
            out = IMPLEMENTATIONS[name](q, k, v).float()
            errors[name] = (out - reference).abs().max().item()
        for _ in range(ROUNDS):
            for name in names:
                fn = IMPLEMENTATIONS[name]
                times[name].append(benchmark(lambda f=fn: f(q, k, v), warmup=1, repeat=repeat,
                                             device=DEVICE).median_s)
    rows = []
    for name in IMPLEMENTATIONS:
        if name not in names:
            rows.append({"implementation": name, "n": n, "time_s": None, "peak_bytes": None,
                         "max_abs_error": None, "skipped": "S and P exceed the budget"})
            continue
        rows.append({"implementation": name, "n": n, "time_s": statistics.median(times[name]),
                     "peak_bytes": peaks[name], "max_abs_error": errors[name],
                     "reference": names[0]})
    return rows


def summary_text(rows: list[dict], total_s: float) -> str:
    def cells(r: dict) -> str:
        if r["time_s"] is None:
            return f"| {r['n']} | {r['implementation']} | skipped | {r['skipped']} | |"
        return (f"| {r['n']} | {r['implementation']} | {format_seconds(r['time_s'])} | "
                f"{format_bytes(r['peak_bytes'])} | {r['max_abs_error']:.1e} |")

    dtype = "fp16" if TDTYPE == torch.float16 else "fp32"
    return (
        f"# Attention against N: standard, tiled, SDPA ({DEVICE}, {dtype})\n\n"
        f"What this measures and how: causal attention, batch 1, {HEADS} heads of d = {D_HEAD}, "
        "by the standard algorithm (S and P materialized), the tiled algorithm with the "
        f"online softmax in plain PyTorch (`llmperf.measured.kernels.flash_attention`, "
        f"blocks of {BLOCK}) "
        "and PyTorch's fused `scaled_dot_product_attention`. Time is the median over "
        f"{ROUNDS} rounds in which the implementations take turns; peak tensor memory is "
        "`llmperf.measured.kernels.peak_tensor_bytes`, the most bytes the tensors each creates "
        "hold "
        "at once (inputs excluded; on a CPU a fused kernel's internal scratch buffers are "
        "not seen). The standard algorithm is skipped where S and P alone would exceed "
        f"{format_bytes(BUDGET)}. The last column is the largest difference from the first "
        "implementation run at that N. Look for the standard algorithm's memory growing as "
        "N^2 and the other two's as N; the tiled version's time reflects a Python loop of "
        "small operators, not a fused kernel.\n\n"
        "| N | implementation | time | peak tensor memory | max abs difference |\n"
        "|---|---|---|---|---|\n" + "\n".join(cells(r) for r in rows) + "\n\n"
        f"Whole run: {total_s:.0f} s.\n")


def main() -> None:
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    rows = [r for n in LENGTHS for r in measure(n, gen)]
    total_s = time.perf_counter() - start
    data = {"device": DEVICE, "dtype": str(TDTYPE).removeprefix("torch."), "heads": HEADS,
            "d_head": D_HEAD, "block_size": BLOCK, "causal": True, "budget_bytes": BUDGET,
            "rounds": ROUNDS, "rows": rows, "total_s": total_s}
    write("attention", data, summary_text(rows, total_s))


if __name__ == "__main__":
    main()
