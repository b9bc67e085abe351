"""(c) Decode tokens/s of llmperf's Transformer against transformers' LlamaForCausalLM.

Same config (ref-medium), same weights (copied across with llmperf.measured.hf), same threads,
fp32, in one process. Both prefill a 32-token prompt, then each greedy decode step is
timed on its own; the two models alternate round by round so a busy moment on a
shared machine hits both.

Run: .venv/bin/python benchmarks/vs_huggingface.py
"""
import statistics
import time

import torch
from _common import write

from llmperf.measured.cache import KVCache
from llmperf.measured.hf import llama_config, to_hf_state_dict
from llmperf.measured.model import Transformer

MODEL, PROMPT, STEPS, ROUNDS = "ref-medium", 32, 16, 5


def hf_model(ours: Transformer):
    import transformers

    model = transformers.LlamaForCausalLM(llama_config(ours.config)).eval()
    model.load_state_dict(to_hf_state_dict(ours))
    return model, transformers.__version__


def step_times(prefill, decode) -> list[float]:
    """Prefill, then STEPS greedy decode steps, each timed."""
    logits, state = prefill()
    times = []
    for _ in range(STEPS):
        token = logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        logits, state = decode(token, state)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ours = Transformer(MODEL, max_seq_len=PROMPT + STEPS + 1)
    hf, hf_version = hf_model(ours)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, ours.config.vocab_size, (1, PROMPT), generator=gen)
    cache = KVCache(ours, batch=1)

    def ours_prefill():
        return ours(prompt, 0, cache, last_only=True), PROMPT

    def ours_decode(token, pos):
        return ours(token, pos, cache), pos + 1

    def hf_prefill():
        out = hf(prompt, use_cache=True, logits_to_keep=1)
        return out.logits, out.past_key_values

    def hf_decode(token, past):
        out = hf(token, past_key_values=past, use_cache=True)
        return out.logits, out.past_key_values

    runs = {"llmperf": [], "transformers": []}
    with torch.inference_mode():
        for _ in range(ROUNDS):
            runs["llmperf"].append(statistics.median(step_times(ours_prefill, ours_decode)))
            runs["transformers"].append(statistics.median(step_times(hf_prefill, hf_decode)))
        same = torch.equal(ours(prompt, last_only=True).argmax(-1),
                           hf(prompt).logits[:, -1:].argmax(-1))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["transformers"] / med["llmperf"]
    summary = (
        f"# Decode tokens/s: llmperf Transformer vs transformers {hf_version} LlamaForCausalLM\n\n"
        f"{MODEL}, fp32, batch 1, prompt {PROMPT}, {STEPS} decode steps per round, {ROUNDS} "
        f"rounds, {torch.get_num_threads()} threads each; same weights (same greedy next token: "
        f"{same}).\n\n"
        "| implementation | median step | tokens/s |\n|---|---|---|\n"
        + "\n".join(f"| {k} | {v * 1e3:.1f} ms | {1 / v:.1f} |" for k, v in med.items())
        + f"\n\n**Ratio (llmperf tokens/s / transformers tokens/s): {ratio:.2f}x** "
          "(target >= 1.0x).\n")
    write("vs_huggingface", {"model": MODEL, "prompt": PROMPT, "steps": STEPS,
                             "transformers": hf_version, "round_median_step_s": runs,
                             "median_step_s": med, "ratio": ratio, "same_next_token": same},
          summary)


if __name__ == "__main__":
    main()
