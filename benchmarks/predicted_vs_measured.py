"""(d) llmperf's roofline prediction against measured step times, over batch and context.

Prediction: the model's step costs placed on measure_host()'s roofline at fp32 (each
operator at its own roofline, summed), with attention costed as the model runs it
(`Transformer.attention_kernel`: a fused causal kernel in prefill): Measurement.predicted_s.
Measurement: measure_decode and measure_prefill of the same fp32 model on the CPU.
Ratio = measured / predicted (1.0 = the roofline is reached; 2.0 = twice as slow as the roofline).

Run: .venv/bin/python benchmarks/predicted_vs_measured.py
"""
import statistics

from _common import write

import llmperf as lp
from llmperf.measured.measure import measure_decode, measure_host, measure_prefill
from llmperf.measured.model import Transformer

MODEL = "ref-small"
DECODE = [(b, c) for b in (1, 4, 16) for c in (128, 512, 1024)]
PREFILL = [(b, n) for b in (1, 4) for n in (64, 256)]


def main() -> None:
    acc = measure_host()
    model = Transformer(MODEL, max_seq_len=1025)
    rows = []
    for phase, sweep in (("decode", DECODE), ("prefill", PREFILL)):
        for batch, length in sweep:
            if phase == "decode":
                m = measure_decode(model, length, batch, steps=10)
            else:
                m = measure_prefill(model, length, batch, repeat=5)
            predicted_s = m.predicted_s(acc)
            rows.append({"phase": phase, "batch": batch, "seq_len": length,
                         "predicted_s": predicted_s, "measured_s": m.timing.median_s,
                         "measured_iqr_s": m.timing.iqr_s, "ratio": m.timing.median_s / predicted_s,
                         "intensity": m.cost.intensity})
    table = "\n".join(f"| {r['phase']} | {r['batch']} | {r['seq_len']} | {r['intensity']:.1f} | "
                      f"{r['predicted_s'] * 1e3:.2f} ms | {r['measured_s'] * 1e3:.2f} ms | "
                      f"{r['ratio']:.2f} |" for r in rows)
    med = {p: statistics.median(r["ratio"] for r in rows if r["phase"] == p)
           for p in ("decode", "prefill")}
    summary = (
        f"# Predicted (roofline) vs measured step times, {MODEL}, fp32\n\n"
        f"Roofline of {acc.name}: fp32 peak {lp.format_flop_rate(acc.peak('fp32'))}, "
        f"bandwidth {lp.format_bandwidth(acc.mem_bandwidth)}.\n\n"
        "| phase | batch | tokens (context or prompt) | FLOP/B | predicted | measured "
        "| measured / predicted |\n"
        f"|---|---|---|---|---|---|---|\n{table}\n\n"
        f"Median ratio: decode {med['decode']:.2f}, prefill {med['prefill']:.2f}.\n")
    write("predicted_vs_measured", {"model": MODEL, "accelerator": {
        "name": acc.name, "peak_flops": dict(acc.peak_flops), "mem_bandwidth": acc.mem_bandwidth},
        "rows": rows, "median_ratio": med}, summary)


if __name__ == "__main__":
    main()
