"""Static against continuous (and chunked) batching on the engine, and transformers' generate.

One process, one workload: 32 requests arriving together, prompts uniform on 16..128 tokens,
outputs exponential (mean 48, capped at 160), on ref-small in fp32 with the same prompts and
weights everywhere. The engine serves them under each policy with max_batch 16;
transformers' LlamaForCausalLM (same weights, via llmperf.measured.hf) runs batched `generate` on
the same requests in arrival order, 16 at a time, prompts left-padded, each batch generating
its longest output (it cannot stop a row early without an end-of-sequence token, so this is
static batching with padding). Throughput counts the requested output tokens only.
The runs alternate round by round, so a busy moment on a shared machine hits all of them.

One torch thread: on a shared 2-core host, two threads waiting on each other at every
operator ran a decode step ~10x slower than one thread while other jobs were running.

Run: .venv/bin/python benchmarks/engine_vs_static.py
"""
import statistics
import time

import torch
from _common import write

from llmperf.measured.engine import Engine
from llmperf.measured.hf import llama_config, to_hf_state_dict
from llmperf.measured.model import Transformer
from llmperf.serving import Exponential, Uniform, workload

MODEL, MAX_BATCH, TOKEN_BUDGET, ROUNDS, THREADS = "ref-small", 16, 128, 2, 1
POLICIES = (("static", None), ("continuous", None), ("chunked", TOKEN_BUDGET))


def requests_and_prompts(model: Transformer, n: int = 32, seed: int = 0):
    reqs = workload(n, Uniform(16, 128), Exponential(48, 160), rate_per_s=None, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, model.config.vocab_size, (r.prompt_tokens,), generator=gen).tolist()
               for r in reqs]
    return reqs, prompts


def hf_generate(hf, requests, prompts) -> tuple[float, list[list[int]]]:
    """Seconds to serve `requests` with batched generate, MAX_BATCH at a time; their tokens."""
    outputs, start = [], time.perf_counter()
    for lo in range(0, len(requests), MAX_BATCH):
        batch = list(range(lo, min(lo + MAX_BATCH, len(requests))))
        width = max(len(prompts[i]) for i in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        steps = max(requests[i].output_tokens for i in batch)
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
        outputs += [out[row, width:width + requests[i].output_tokens].tolist()
                    for row, i in enumerate(batch)]
    return time.perf_counter() - start, outputs


def main() -> None:
    import transformers

    torch.set_num_threads(THREADS)
    model = Transformer(MODEL, max_seq_len=512)
    hf = transformers.LlamaForCausalLM(llama_config(model.config)).eval()
    hf.load_state_dict(to_hf_state_dict(model))
    hf.generation_config.eos_token_id = None  # force the requested lengths
    requests, prompts = requests_and_prompts(model)
    tokens = sum(r.output_tokens for r in requests)
    Engine(model, MAX_BATCH).run(requests[:4], prompts[:4])  # warm-up
    rounds: dict[str, list[dict]] = {p: [] for p, _ in POLICIES} | {"transformers": []}
    outputs = {}
    with torch.inference_mode():
        for _ in range(ROUNDS):
            for policy, budget in POLICIES:
                engine = Engine(model, MAX_BATCH, policy, token_budget=budget)
                run = engine.run(requests, prompts)
                outputs[policy] = engine.outputs
                rounds[policy].append({
                    "makespan_s": run.makespan_s, "throughput_tok_s": run.throughput_tok_s,
                    "iterations": len(run.iterations),
                    **{f"{m}_p{q}": run.percentile(m, q) for m in ("ttft_s", "tpot_s")
                       for q in (50, 90, 99)}})
            seconds, outputs["transformers"] = hf_generate(hf, requests, prompts)
            rounds["transformers"].append({"makespan_s": seconds,
                                           "throughput_tok_s": tokens / seconds})
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rounds.items()}
    same = {k: sum(o == g for o, g in zip(outputs[k], outputs["continuous"])) for k in outputs}
    tput = {k: v["throughput_tok_s"] for k, v in med.items()}
    ratios = {"continuous_over_static": tput["continuous"] / tput["static"],
              "chunked_over_static": tput["chunked"] / tput["static"],
              "continuous_over_transformers": tput["continuous"] / tput["transformers"],
              "static_over_transformers": tput["static"] / tput["transformers"]}
    rows = "\n".join(
        f"| {k} | {v['makespan_s']:.2f} s | {v['throughput_tok_s']:.1f} | "
        + (" | ".join(f"{v[f'{m}_p{q}'] * 1e3:.0f}" for m in ("ttft_s", "tpot_s")
                      for q in (50, 90, 99)) if "ttft_s_p50" in v else " | ".join(["-"] * 6))
        + f" | {same[k]}/{len(requests)} |" for k, v in med.items())
    summary = (
        f"# Engine: static vs continuous batching, and transformers {transformers.__version__}"
        f" batched generate\n\n{MODEL}, fp32, {THREADS} thread, {len(requests)} requests at "
        f"time 0 ({sum(r.prompt_tokens for r in requests)} prompt tokens, {tokens} output "
        f"tokens), max_batch {MAX_BATCH}, chunked token_budget {TOKEN_BUDGET}; medians of "
        f"{ROUNDS} interleaved rounds.\n\n"
        "| run | makespan | output tok/s | TTFT p50 ms | p90 | p99 | TPOT p50 ms | p90 | p99 "
        "| tokens equal to continuous's |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"**Continuous / static throughput: {ratios['continuous_over_static']:.2f}x; "
        f"continuous / transformers generate: {ratios['continuous_over_transformers']:.2f}x** "
        f"(static / transformers {ratios['static_over_transformers']:.2f}x, chunked / static "
        f"{ratios['chunked_over_static']:.2f}x).\n\n"
        "transformers' rows are left-padded, so its greedy tokens may differ from the engine's "
        "by float rounding; the engine's policies give each request the tokens of running it "
        "alone (tested).\n")
    write("engine_vs_static", {"model": MODEL, "max_batch": MAX_BATCH, "threads": THREADS,
                               "token_budget": TOKEN_BUDGET, "rounds": rounds, "median": med,
                               "ratios": ratios, "requests_with_tokens_equal_to_continuous": same,
                               "transformers": transformers.__version__}, summary)


if __name__ == "__main__":
    main()
