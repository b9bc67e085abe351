"""(b) Batch-1 decode of ref-medium: achieved bandwidth as a fraction of measure_host()'s.

Bytes per step are those llmperf.layer_costs counts (weights, KV cache, activations),
so "achieved bandwidth" = bytes / median step time. The host's bandwidth is measured
again in every round, interleaved with the decode timings, so a busy moment on a shared
machine hits both sides. The model runs both ways in the same rounds: with PyTorch's
kernels (cpu_gemv=False) and with cpu_gemv=True (batch-1 decode through NumPy's
matrix-vector kernel: llmperf.transformer._CpuGemv). Also compares the two weight
layouts for one token's matmuls, and both libraries' matrix-vector kernels over all
the weights.

Run: .venv/bin/python benchmarks/decode_bandwidth.py
"""
import os

# Before NumPy loads: OpenBLAS workers go to sleep at once after a call instead of
# spinning, so the NumPy kernel (cpu_gemv=True) does not slow the PyTorch runs beside it.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import statistics  # noqa: E402

import torch
import torch.nn.functional as F
from _common import write

from llmperf.host import stream_bandwidth
from llmperf.measure import benchmark, measure_decode
from llmperf.transformer import Transformer
from llmperf.units import MiB, format_bandwidth, format_bytes

MODEL, CONTEXT, ROUNDS = "ref-medium", 128, 5


def layout_check(model: Transformer) -> dict:
    """GB/s of one token's matmuls over every weight, with W (in, out) as stored and as nn.Linear's (out, in)."""
    ws = [p for n, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in n]
    wts = [w.t().contiguous() for w in ws]
    xs = {w.shape[0]: torch.randn(1, w.shape[0]) for w in ws}
    nbytes = sum(w.numel() * 4 for w in ws)
    with torch.inference_mode():
        ours = benchmark(lambda: [xs[w.shape[0]] @ w for w in ws], repeat=7).median_s
        linear = benchmark(lambda: [F.linear(xs[w.shape[1]], w) for w in wts], repeat=7).median_s
        nws, nxs = [w.numpy() for w in ws], {k: x.numpy() for k, x in xs.items()}
        numpy_s = benchmark(lambda: [nxs[w.shape[0]] @ w for w in nws], repeat=7).median_s
    return {"torch x @ W (in, out)": nbytes / ours, "torch F.linear, W (out, in)": nbytes / linear,
            "numpy x @ W (in, out)": nbytes / numpy_s}


def main() -> None:
    model = Transformer(MODEL, max_seq_len=CONTEXT + 1)
    rounds = []
    for _ in range(ROUNDS):
        host = max(stream_bandwidth("copy", 512 * MiB), stream_bandwidth("read", 512 * MiB))
        model.cpu_gemv = False
        m = measure_decode(model, CONTEXT, batch=1, steps=10)
        model.cpu_gemv = True
        gemv = measure_decode(model, CONTEXT, batch=1, steps=10)
        rounds.append({"host_bandwidth": host, "decode_bytes_per_s": m.bytes_per_s,
                       "step_median_s": m.timing.median_s, "fraction": m.bytes_per_s / host,
                       "cpu_gemv_bytes_per_s": gemv.bytes_per_s,
                       "cpu_gemv_fraction": gemv.bytes_per_s / host})
    frac = statistics.median(r["fraction"] for r in rounds)
    host = statistics.median(r["host_bandwidth"] for r in rounds)
    achieved = statistics.median(r["decode_bytes_per_s"] for r in rounds)
    frac_gemv = statistics.median(r["cpu_gemv_fraction"] for r in rounds)
    layouts = layout_check(model)
    weights = model.config.weight_bytes("fp32")
    summary = (
        f"# Batch-1 decode bandwidth, {MODEL} (fp32 weights {format_bytes(weights)}), context {CONTEXT}\n\n"
        f"Bytes per step (llmperf.layer_costs): {format_bytes(m.cost.bytes)}.\n\n"
        f"| round | host bandwidth | decode achieved | fraction | step | with cpu_gemv=True | fraction |\n"
        "|---|---|---|---|---|---|---|\n"
        + "\n".join(f"| {i} | {format_bandwidth(r['host_bandwidth'])} | {format_bandwidth(r['decode_bytes_per_s'])} "
                    f"| {r['fraction']:.0%} | {r['step_median_s'] * 1e3:.1f} ms "
                    f"| {format_bandwidth(r['cpu_gemv_bytes_per_s'])} | {r['cpu_gemv_fraction']:.0%} |"
                    for i, r in enumerate(rounds))
        + f"\n\n**Median fraction of measure_host bandwidth: {frac:.0%}** (target >= 70 %); "
          f"median host {format_bandwidth(host)}, median decode {format_bandwidth(achieved)}. "
          f"With NumPy's matrix-vector kernel (cpu_gemv=True, the default where OPENBLAS_THREAD_TIMEOUT "
          f"is set, as under make): **{frac_gemv:.0%}**.\n\n"
          "One token's matmuls over all weights: "
        + ", ".join(f"{k}: {format_bandwidth(v)}" for k, v in layouts.items()) + ".\n")
    write("decode_bandwidth", {"model": MODEL, "context": CONTEXT, "bytes_per_step": m.cost.bytes,
                               "rounds": rounds, "median_fraction": frac, "median_host_bandwidth": host,
                               "median_decode_bandwidth": achieved, "median_fraction_cpu_gemv": frac_gemv,
                               "layout_check": layouts}, summary)


if __name__ == "__main__":
    main()
