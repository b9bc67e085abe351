"""(c) Decode tokens/s of llmperf's Transformer against transformers' LlamaForCausalLM.

Same config (ref-medium), same weights (copied across), same cores, fp32, in one
process. llmperf runs twice: with PyTorch's kernels (cpu_gemv=False) and with
cpu_gemv=True (batch-1 decode through NumPy's matrix-vector kernel, PyTorch held to one
thread meanwhile; see llmperf.transformer._CpuGemv). Both prefill a 32-token prompt, then each decode step is timed on its own;
the two models alternate round by round so a busy moment on a shared machine hits both.

Run: .venv/bin/python benchmarks/vs_huggingface.py
"""
import os

# Before NumPy loads: OpenBLAS workers go to sleep at once after a call instead of
# spinning, so the NumPy kernel (cpu_gemv=True) does not slow the PyTorch runs beside it.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import statistics  # noqa: E402
import time

import torch
from _common import write

from llmperf.transformer import Transformer

MODEL, PROMPT, STEPS, ROUNDS = "ref-medium", 32, 16, 5


def hf_model(ours: Transformer):
    import transformers

    c = ours.config
    cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
        head_dim=c.d_head, max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, tie_word_embeddings=c.tied_embeddings)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.load_state_dict(ours.hf_state_dict())
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
    prompt = torch.randint(0, ours.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))

    def ours_prefill():
        return ours(prompt, 0, last_only=True), PROMPT

    def ours_decode(token, pos):
        return ours(token, pos), pos + 1

    def hf_prefill():
        out = hf(prompt, use_cache=True, logits_to_keep=1)
        return out.logits, out.past_key_values

    def hf_decode(token, cache):
        out = hf(token, past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values

    runs = {"llmperf": [], "llmperf, cpu_gemv=True": [], "transformers": []}
    with torch.inference_mode():
        for _ in range(ROUNDS):
            ours.cpu_gemv = False
            runs["llmperf"].append(statistics.median(step_times(ours_prefill, ours_decode)))
            ours.cpu_gemv = True
            runs["llmperf, cpu_gemv=True"].append(statistics.median(step_times(ours_prefill, ours_decode)))
            runs["transformers"].append(statistics.median(step_times(hf_prefill, hf_decode)))
        same = torch.equal(ours(prompt, 0, last_only=True).argmax(-1), hf(prompt).logits[:, -1:].argmax(-1))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["transformers"] / med["llmperf"]
    ratio_gemv = med["transformers"] / med["llmperf, cpu_gemv=True"]
    summary = (
        f"# Decode tokens/s: llmperf Transformer vs transformers {hf_version} LlamaForCausalLM\n\n"
        f"{MODEL}, fp32, batch 1, prompt {PROMPT}, {STEPS} decode steps per round, {ROUNDS} rounds, "
        f"{torch.get_num_threads()} threads each; same weights (same greedy next token: {same}).\n\n"
        "| implementation | median step | tokens/s |\n|---|---|---|\n"
        + "\n".join(f"| {k} | {v * 1e3:.1f} ms | {1 / v:.1f} |" for k, v in med.items())
        + f"\n\n**Ratio (llmperf tokens/s / transformers tokens/s): {ratio:.2f}x** with PyTorch's "
          f"kernels, **{ratio_gemv:.2f}x** with cpu_gemv=True (the default where "
          "OPENBLAS_THREAD_TIMEOUT is set, as under make) (target >= 1.0x).\n")
    write("vs_huggingface", {"model": MODEL, "prompt": PROMPT, "steps": STEPS, "transformers": hf_version,
                             "round_median_step_s": runs, "median_step_s": med, "ratio": ratio,
                             "ratio_cpu_gemv": ratio_gemv,
                             "same_next_token": same}, summary)


if __name__ == "__main__":
    main()
