"""Speculative decoding against plain decoding on this machine, with the trained target.

Drafts: the trained draft model (13x fewer parameters) and an n-gram prompt lookup (no
model). For each gamma: tokens/s of speculative and plain decoding over the same prompts
(medians of alternating rounds), the acceptance rate alpha (overall and per draft position),
tokens per target step, the measured speedup, and two predictions from the measured alpha and
step times: E / (gamma c + 1) and E / (gamma c + r), r the measured cost of a verification
step over gamma + 1 positions relative to a decode step. Greedy (temperature 0, where every
output must equal plain greedy decoding's, checked) and sampled (temperature 1).

A second table is the time budget per new token: the measured time of speculative decoding
against the forward passes as the benchmarks price them ((gamma c + r) t_step / tau), plus
the host time (everything a step does outside the two models' forward passes) and the
prefill measured inside the runs; the remainder is what that leaves unexplained.

Run: .venv/bin/python benchmarks/speculative.py
"""
import torch
from _common import write

from llmperf.measured.drafts import NgramDraft
from llmperf.measured.experiments import compare
from llmperf.trained import load, validation_tokens

PROMPTS, PROMPT_LEN, NEW_TOKENS = 6, 64, 128
GAMMAS = (1, 2, 3, 4, 6, 8)
TEMPERATURES = (0.0, 1.0)
ROUNDS = 3


def main() -> None:
    target, draft = load("target"), load("draft")
    text = validation_tokens(target.tokenizer)
    step = (len(text) - PROMPT_LEN) // PROMPTS
    prompts = [text[i * step:i * step + PROMPT_LEN].tolist() for i in range(PROMPTS)]
    drafts = {"draft model": draft.model, "n-gram lookup": NgramDraft(max_ngram=3)}
    rows = []
    for temperature in TEMPERATURES:
        for r in compare(target.model, drafts, prompts, NEW_TOKENS, GAMMAS, temperature,
                         rounds=ROUNDS):
            rows.append({**r.__dict__, "alpha_by_position": list(r.alpha_by_position),
                         "speedup": r.speedup,
                         "predicted_tokens_per_step": r.predicted_tokens_per_step,
                         "predicted_speedup": r.predicted_speedup,
                         "predicted_speedup_measured_verify": r.predicted_speedup_measured_verify,
                         "spec_s_per_token": r.spec_s_per_token,
                         "plain_s_per_token": r.plain_s_per_token,
                         "predicted_forward_s_per_token": r.predicted_forward_s_per_token,
                         "predicted_s_per_token_with_host": r.predicted_s_per_token_with_host,
                         "unexplained_s_per_token": r.unexplained_s_per_token,
                         "speedup_factors": r.speedup_factors()})
    lines = ["# Speculative decoding against plain decoding (trained target, batch 1)", "",
             f"{PROMPTS} prompts of {PROMPT_LEN} characters from the validation split, "
             f"{NEW_TOKENS} new tokens each, medians of {ROUNDS} alternating rounds. "
             "alpha: accepted / examined drafts; E: tokens per target step; predicted speedups "
             "from the measured alpha, c (draft step / target step) and r (verification step "
             "over gamma + 1 positions / decode step).", "",
             "| temperature | draft | gamma | plain tok/s | spec tok/s | speedup | predicted "
             "E/(gc+1) | predicted E/(gc+r) | alpha | tokens/step | predicted E | c | r | "
             "greedy identical |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        same = "-" if r["identical"] is None else ("yes" if r["identical"] else "NO")
        lines.append(
            f"| {r['temperature']:g} | {r['draft']} | {r['gamma']} | {r['plain_tokens_per_s']:.0f} "
            f"| {r['tokens_per_s']:.0f} | {r['speedup']:.2f}x | {r['predicted_speedup']:.2f}x | "
            f"{r['predicted_speedup_measured_verify']:.2f}x | {r['alpha']:.3f} | "
            f"{r['tokens_per_step']:.2f} | {r['predicted_tokens_per_step']:.2f} | {r['c']:.2f} | "
            f"{r['verify_ratio']:.2f} | {same} |")
    lines += ["", "Time budget, milliseconds per new token (speculative runs of median wall "
              "time): measured; the forward passes as the benchmarks price them, "
              "(gamma c + r) t_step / tau; host time and prefill measured inside the runs; "
              "remainder = measured - (predicted forwards + host + prefill). Plain: plain "
              "decoding's measured time per token, beside the benchmarked decode step t_step.",
              "",
              "| temperature | draft | gamma | measured | predicted forwards "
              "| forwards in the loop | host | host share | prefill | remainder | plain | t_step |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = {k: r[k] * 1e3 for k in ("spec_s_per_token", "predicted_forward_s_per_token",
                                       "host_s_per_token", "prefill_s_per_token",
                                       "plain_s_per_token", "target_step_s")}
        loop = (r["target_forward_s_per_token"] + r["draft_forward_s_per_token"]) * 1e3
        host_share = r["host_s_per_token"] / r["spec_s_per_token"]
        remainder = r["unexplained_s_per_token"] / r["spec_s_per_token"]
        lines.append(
            f"| {r['temperature']:g} | {r['draft']} | {r['gamma']} | "
            f"{ms['spec_s_per_token']:.3f} | {ms['predicted_forward_s_per_token']:.3f} | "
            f"{loop:.3f} | {ms['host_s_per_token']:.3f} | {host_share:.0%} | "
            f"{ms['prefill_s_per_token']:.3f} | {remainder:+.0%} | "
            f"{ms['plain_s_per_token']:.3f} | {ms['target_step_s']:.3f} |")
    write("speculative", {"prompts": PROMPTS, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
                          "rounds": ROUNDS, "torch_threads": torch.get_num_threads(),
                          "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
