"""MoE against dense decode steps on this machine, and where the MoE's router sends real text.

The trained MoE (4 SwiGLU experts of d_ff 344 per layer, 2 per token) and the trained dense
target (one SwiGLU of d_ff 688) run the same number of FFN parameters per token. For batch
sizes 1 to 128 after 128 cached tokens: median decode-step time of each (alternating rounds),
the bytes `llmperf.step_costs` counts for the step (the MoE reads the experts its batch
touches, E (1 - (1 - k/E)^B) of them under uniform routing), and the achieved bandwidth. The
routing part records the experts chosen for 1,024 validation tokens (router hooks) and
compares the experts that random batches of those tokens touch with the uniform formula.

Run: .venv/bin/python benchmarks/moe_decode.py
"""
import statistics

from _common import write

import llmperf as lp
from llmperf.measured.moe import decode_steps, record_routing
from llmperf.trained import load, validation_tokens

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
CONTEXT, ROUNDS, STEPS = 128, 5, 8


def main() -> None:
    moe, dense = load("moe"), load("target")
    per_round = {"moe": [], "dense": []}
    for _ in range(ROUNDS):
        per_round["moe"].append(decode_steps(moe.model, list(BATCHES), CONTEXT, STEPS))
        per_round["dense"].append(decode_steps(dense.model, list(BATCHES), CONTEXT, STEPS))
    rows = []
    for i, b in enumerate(BATCHES):
        m = [r[i] for r in per_round["moe"]]
        d = [r[i] for r in per_round["dense"]]
        moe_s, dense_s = (statistics.median(x.median_s for x in m),
                          statistics.median(x.median_s for x in d))
        rows.append({"batch": b, "moe_s": moe_s, "dense_s": dense_s,
                     "moe_bytes": m[0].predicted_bytes, "dense_bytes": d[0].predicted_bytes,
                     "experts_touched_uniform": m[0].experts_touched})
    routing = record_routing(moe.model, validation_tokens(moe.tokenizer), max_windows=4)
    cfg = moe.config
    touched = [{"batch": b, "measured_per_layer": routing.touched(b).tolist(),
                "uniform": lp.experts_touched(b, cfg.n_experts, cfg.experts_per_token)}
               for b in (1, 2, 3, 4, 6, 8, 16, 32)]
    lines = ["# MoE against dense decode steps (trained models, fp32, CPU)", "",
             f"Decode step after {CONTEXT} cached tokens, medians of {ROUNDS} alternating rounds "
             f"of {STEPS} steps. Predicted bytes from `llmperf.step_costs` (uniform routing).",
             "", "| batch | MoE step | dense step | measured MoE/dense | predicted bytes MoE/dense "
             "| experts touched (uniform) | MoE GB/s | dense GB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        moe_gbs = r["moe_bytes"] / r["moe_s"] / 1e9
        dense_gbs = r["dense_bytes"] / r["dense_s"] / 1e9
        lines.append(f"| {r['batch']} | {lp.format_seconds(r['moe_s'])} | "
                     f"{lp.format_seconds(r['dense_s'])} | {r['moe_s'] / r['dense_s']:.2f} | "
                     f"{r['moe_bytes'] / r['dense_bytes']:.2f} | "
                     f"{r['experts_touched_uniform']:.2f} | {moe_gbs:.1f} | {dense_gbs:.1f} |")
    shares = routing.shares()
    lines += ["", f"Routing of {routing.tokens} validation tokens: each expert's share of the "
              "token-expert slots per layer (uniform: 0.25).", "",
              "| layer | " + " | ".join(f"expert {e}" for e in range(cfg.n_experts)) + " |",
              "|---:|" + "---:|" * cfg.n_experts]
    for layer, row in enumerate(shares.tolist()):
        lines.append(f"| {layer} | " + " | ".join(f"{s:.3f}" for s in row) + " |")
    lines += ["", "Experts touched by a batch of B random validation tokens (mean over 400 "
              "batches) against uniform routing.", "",
              "| B | uniform | measured, per layer |", "|---:|---:|---|"]
    for t in touched:
        lines.append(f"| {t['batch']} | {t['uniform']:.2f} | "
                     + ", ".join(f"{x:.2f}" for x in t["measured_per_layer"]) + " |")
    write("moe_decode", {"context": CONTEXT, "rounds": ROUNDS, "steps": STEPS, "rows": rows,
                         "routing_shares": shares.tolist(), "touched": touched},
          "\n".join(lines))


if __name__ == "__main__":
    main()
