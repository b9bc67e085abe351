"""Paged against contiguous KV in the engine: tokens/s and KV memory on one workload.

One process, one workload: 48 requests arriving together, prompts uniform on 8..32
tokens, outputs uniform on 16..192, served greedily by the trained target
(`llmperf.trained.load("target")`, fp32) under continuous batching. Rows:

- contiguous, budget: a KV budget of BUDGET_TOKENS token slots cut into slots of the
  longest request's length, so BUDGET_TOKENS // max_len requests run at once;
- paged, budget: the same budget in blocks of 16 tokens, as many requests as fit
  (max_batch 48), preempting by recompute when blocks run out;
- paged int8, budget bytes: the int8 cache in the bytes of the fp32 budget (about 3.9x
  the token slots);
- contiguous, B = 16 and paged, B = 16: sixteen requests at once either way; the
  contiguous cache allocates sixteen whole slots, the paged one holds blocks as tokens arrive
  (its peak is measured from the blocks in use; the pool is sized like the contiguous cache).

"KV allocated" is the bytes of the cache tensors; "KV peak held" the most bytes the running
requests held at once (slots for the contiguous cache, blocks for the paged). Every row's
tokens are compared with the contiguous row's (greedy: they must be equal, except int8).
The rows alternate round by round, so a busy moment on a shared machine hits all of them.
One torch thread (see engine_vs_static.py).

Run: .venv/bin/python benchmarks/paged_kv.py
"""
import statistics

import torch
from _common import write

from llmperf import trained
from llmperf.analytic.quant import int8_kv_bytes_per_token
from llmperf.measured.engine import Engine
from llmperf.serving import Uniform, workload

BUDGET_TOKENS, BLOCK, ROUNDS, THREADS, N = 2048, 16, 5, 1, 48


def configs(max_len: int, int8_tokens: int) -> dict[str, dict]:
    return {
        "contiguous, budget": dict(max_batch=BUDGET_TOKENS // max_len),
        "paged, budget": dict(max_batch=N, kv_memory="paged", block_size=BLOCK,
                              kv_capacity_tokens=BUDGET_TOKENS),
        "paged int8, budget bytes": dict(max_batch=N, kv_memory="paged", block_size=BLOCK,
                                         kv_capacity_tokens=int8_tokens, kv_dtype="int8"),
        "contiguous, B = 16": dict(max_batch=16),
        "paged, B = 16": dict(max_batch=16, kv_memory="paged", block_size=BLOCK),
    }


def main() -> None:
    torch.set_num_threads(THREADS)
    model = trained.load("target").model
    requests = workload(N, Uniform(8, 32), Uniform(16, 192), rate_per_s=None, seed=3)
    max_len = max(r.total_tokens for r in requests) - 1
    fp32_bytes = BUDGET_TOKENS * model.config.kv_bytes_per_token("fp32")
    int8_tokens = fp32_bytes // int8_kv_bytes_per_token(model.config) // BLOCK * BLOCK
    rows = configs(max_len, int8_tokens)
    Engine(model, 4).run(requests[:4])  # warm-up
    rounds: dict[str, list[dict]] = {k: [] for k in rows}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(ROUNDS):
        for name, kw in rows.items():
            engine = Engine(model, **kw)
            run = engine.run(requests)
            outputs[name] = engine.outputs
            rounds[name].append({
                "throughput_tok_s": run.throughput_tok_s, "makespan_s": run.makespan_s,
                "mean_in_flight": run.mean_in_flight, "preemptions": run.preemptions,
                "kv_utilization": run.kv_utilization, "kv_allocated_bytes": engine.cache_bytes,
                "kv_peak_held_bytes": engine.peak_kv_held_bytes,
                "iterations": len(run.iterations)})
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rounds.items()}
    ref = outputs["contiguous, budget"]
    same = {k: sum(a == b for a, b in zip(o, ref)) for k, o in outputs.items()}
    tput = {k: v["throughput_tok_s"] for k, v in med.items()}
    ratios = {
        "paged_over_contiguous_same_budget": tput["paged, budget"] / tput["contiguous, budget"],
        "int8_over_contiguous_same_bytes": (tput["paged int8, budget bytes"]
                                            / tput["contiguous, budget"]),
        "paged_over_contiguous_b16": tput["paged, B = 16"] / tput["contiguous, B = 16"],
        "peak_held_paged_over_contiguous_b16": (med["paged, B = 16"]["kv_peak_held_bytes"]
                                                / med["contiguous, B = 16"]["kv_allocated_bytes"]),
    }
    table = "\n".join(
        f"| {k} | {v['throughput_tok_s']:.0f} | {v['mean_in_flight']:.1f} | "
        f"{v['preemptions']:.0f} | {v['kv_utilization']:.2f} | "
        f"{v['kv_allocated_bytes'] / 2**20:.1f} MiB | {v['kv_peak_held_bytes'] / 2**20:.1f} MiB | "
        f"{same[k]}/{N} |" for k, v in med.items())
    tokens = sum(r.output_tokens for r in requests)
    summary = (
        f"# Paged against contiguous KV cache in the engine\n\n"
        f"trained target (fp32), {THREADS} thread, {N} requests at time 0 "
        f"({sum(r.prompt_tokens for r in requests)} prompt tokens, {tokens} output tokens, "
        f"longest {max_len} cached tokens), continuous batching, greedy; KV budget "
        f"{BUDGET_TOKENS} token slots, blocks of {BLOCK}; medians of {ROUNDS} interleaved "
        f"rounds.\n\n"
        "| run | output tok/s | requests in flight (time mean) | preemptions | KV slots "
        "holding a token | KV allocated | KV peak held | tokens equal to contiguous's |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"{table}\n\n"
        f"**Same KV budget: paged / contiguous throughput "
        f"{ratios['paged_over_contiguous_same_budget']:.2f}x; int8 paged in the same bytes "
        f"{ratios['int8_over_contiguous_same_bytes']:.2f}x. Sixteen at once: paged / "
        f"contiguous throughput {ratios['paged_over_contiguous_b16']:.2f}x, at "
        f"{ratios['peak_held_paged_over_contiguous_b16']:.2f}x the contiguous cache's bytes "
        f"(peak held).**\n\n"
        "On a CPU this small model's decode step grows with every request it holds, so more "
        "requests in flight buy less throughput than on a GPU, where a step's time is set by "
        "the weights it reads; the recomputed prefills of preempted requests and the paged "
        "cache's gather of every request's blocks at every layer (a paged attention kernel "
        "reads them in place) also cost time here. The int8 rows' greedy tokens may differ "
        "from fp32's where the random prompts leave two tokens nearly tied.\n")
    write("paged_kv", {"model": "trained target", "threads": THREADS, "requests": N,
                       "budget_tokens": BUDGET_TOKENS, "int8_budget_tokens": int8_tokens,
                       "block_size": BLOCK, "max_len": max_len, "rounds": rounds,
                       "median": med, "ratios": ratios,
                       "requests_with_tokens_equal_to_contiguous": same}, summary)


if __name__ == "__main__":
    main()
