"""(b) Batch-1 fp32 decode of ref-medium: achieved bandwidth as a fraction of measure_host()'s.

Bytes per step are those llmperf's step costs count (weights, KV cache, activations),
so "achieved bandwidth" = bytes / median step time. The host's bandwidth is measured
again in every round, next to the decode timing, so a busy moment on a shared machine
hits both sides.

Why the fraction is what it is: batch-1 decode is a chain of matrix-vector products,
each reading one weight matrix once. The experiment after the rounds times exactly
those products over the model's own weight matrices with two libraries' kernels:
PyTorch's (F.linear on one row; x86 builds of PyTorch call MKL for it) and NumPy's
(OpenBLAS's sgemv), on the same cores. The two libraries keep
separate thread pools whose workers spin for a while after each call, so every timing
starts after a pause that lets the other pool go to sleep.

Run: .venv/bin/python benchmarks/decode_bandwidth.py
"""
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import write

from llmperf.measured.host import stream_bandwidth
from llmperf.measured.measure import benchmark, measure_decode
from llmperf.measured.model import Transformer
from llmperf.units import MiB, format_bandwidth, format_bytes

MODEL, CONTEXT, ROUNDS, PAUSE_S = "ref-medium", 128, 5, 0.5


def host_bandwidth() -> float:
    """The faster of measure_host's two streams (copy, read) over 512 MiB buffers, in B/s."""
    return max(stream_bandwidth("copy", 512 * MiB), stream_bandwidth("read", 512 * MiB))


def matvec_timers(model: Transformer) -> tuple[int, dict]:
    """Bytes of every nn.Linear weight, and a function per library computing W x for each."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    rows = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}
    arrays = [w.numpy() for w in weights]  # the same memory, no copy
    vectors = {k: x.numpy()[0] for k, x in rows.items()}
    timers = {
        "torch F.linear on one row (MKL)": lambda: [F.linear(rows[w.shape[1]], w) for w in weights],
        "numpy W @ x (OpenBLAS)": lambda: [a @ vectors[a.shape[1]] for a in arrays],
    }
    return sum(w.nbytes for w in weights), timers


def decode_rounds(model: Transformer) -> list[dict]:
    rounds = []
    for _ in range(ROUNDS):
        host = host_bandwidth()
        m = measure_decode(model, CONTEXT, batch=1, steps=10)
        rounds.append({"host_bandwidth": host, "decode_bytes_per_s": m.bytes_per_s,
                       "step_median_s": m.timing.median_s, "fraction": m.bytes_per_s / host,
                       "bytes_per_step": m.cost.bytes})
    return rounds


def matvec_rounds(model: Transformer) -> tuple[int, list[dict]]:
    nbytes, timers = matvec_timers(model)
    rounds = []
    with torch.inference_mode():
        for _ in range(ROUNDS):
            row = {"host_bandwidth": host_bandwidth()}
            for name, fn in timers.items():
                time.sleep(PAUSE_S)
                row[name] = nbytes / benchmark(fn, warmup=2, repeat=7).median_s
            rounds.append(row)
    return nbytes, rounds


def summary_text(rounds: list[dict], nbytes: int, mv_rounds: list[dict], med: dict) -> str:
    names = [k for k in mv_rounds[0] if k != "host_bandwidth"]
    table = "\n".join(
        f"| {i} | {format_bandwidth(r['host_bandwidth'])} | "
        f"{format_bandwidth(r['decode_bytes_per_s'])} | {r['fraction']:.0%} | "
        f"{r['step_median_s'] * 1e3:.1f} ms |" for i, r in enumerate(rounds))
    mv = "\n".join(f"| {k} | {format_bandwidth(med[k])} | {med[k] / med['mv_host']:.0%} |"
                   for k in names)
    return (
        f"# Batch-1 decode bandwidth, {MODEL}, fp32, context {CONTEXT}\n\n"
        f"Bytes per step (step costs): {format_bytes(rounds[0]['bytes_per_step'])}.\n\n"
        "| round | host bandwidth | decode achieved | fraction | step |\n|---|---|---|---|---|\n"
        f"{table}\n\n"
        f"**Median fraction of measure_host bandwidth: {med['fraction']:.0%}** (target >= 70 %); "
        f"median host {format_bandwidth(med['host'])}, median decode "
        f"{format_bandwidth(med['decode'])}.\n\n"
        f"## Why: the matrix-vector kernel\n\n"
        f"One token's products over every weight matrix of the model ({format_bytes(nbytes)}), "
        f"median of {ROUNDS} rounds, as a fraction of the host bandwidth measured in the same "
        "rounds:\n\n| kernel | weights streamed | fraction |\n|---|---|---|\n"
        f"{mv}\n\n"
        "Decode can go no faster than its matrix-vector products: the first row bounds what "
        "PyTorch's own kernels reach, whatever the model code around them does.\n")


def main() -> None:
    model = Transformer(MODEL, max_seq_len=CONTEXT + 1)
    rounds = decode_rounds(model)
    nbytes, mv_rounds = matvec_rounds(model)
    med = {"fraction": statistics.median(r["fraction"] for r in rounds),
           "host": statistics.median(r["host_bandwidth"] for r in rounds),
           "decode": statistics.median(r["decode_bytes_per_s"] for r in rounds),
           "mv_host": statistics.median(r["host_bandwidth"] for r in mv_rounds)}
    med |= {k: statistics.median(r[k] for r in mv_rounds) for k in mv_rounds[0]
            if k != "host_bandwidth"}
    blas = {"torch_mkl": torch.backends.mkl.is_available(), "numpy": np.__version__,
            "numpy_blas": np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]}
    data = {"model": MODEL, "context": CONTEXT, "rounds": rounds, "matvec_weight_bytes": nbytes,
            "matvec_rounds": mv_rounds, "medians": med, "blas": blas}
    write("decode_bandwidth", data, summary_text(rounds, nbytes, mv_rounds, med))


if __name__ == "__main__":
    main()
