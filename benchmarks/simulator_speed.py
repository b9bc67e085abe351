"""How fast the serving simulator runs, under both KV memory policies side by side.

10,000 chat-like requests (ShareGPT means, Poisson arrivals), continuous batching, the
roofline step time of Llama 2 7B (fp16) on an A10, whose KV memory is what the weights
leave. The same requests run with whole-request reservation and with paged memory (blocks
of 16 tokens, preemption by recompute). The rate is above what the instance serves, so it
stays busy and a queue builds. Each timing includes building the step-time model (its
caches start cold) and the whole `simulate` call.

The budget is 2 s per policy on this machine (2 CPU cores, possibly shared: the load
average is recorded at the start and at the end). Repeats alternate the two policies, so a
busy moment on a shared machine hits both; medians are reported.

Run: .venv/bin/python benchmarks/simulator_speed.py
"""
from __future__ import annotations

import os
import time

import numpy as np
from _common import write  # also puts the checkout on sys.path

import llmperf as lp
from llmperf.serving import RooflineStepTime, chat_workload, simulate

N_REQUESTS, RATE_PER_S, MAX_BATCH, BLOCK_SIZE, REPEATS = 10_000, 20.0, 256, 16, 5
BUDGET_S = 2.0
POLICIES = ("reservation", "paged")


def run_once(requests, kv_memory: str, kv_tokens: int):
    """Seconds to build the step-time model and simulate; the run."""
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    start = time.perf_counter()
    step = RooflineStepTime(llama, a10, dtype="fp16")
    run = simulate(requests, policy="continuous", max_batch=MAX_BATCH, step_time=step,
                   kv_capacity_tokens=kv_tokens, kv_memory=kv_memory, block_size=BLOCK_SIZE)
    return time.perf_counter() - start, run


def describe(run, seconds: list[float]) -> dict:
    median_s = float(np.median(seconds))
    return {"seconds": seconds, "median_s": median_s,
            "requests_per_s": N_REQUESTS / median_s, "within_budget": median_s <= BUDGET_S,
            "iterations": len(run.iterations), "preemptions": run.preemptions,
            "mean_in_flight": run.mean_in_flight, "kv_utilization": run.kv_utilization,
            "simulated_makespan_s": run.makespan_s,
            "simulated_throughput_tok_s": run.throughput_tok_s}


def main() -> None:
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    kv_tokens = int((a10.mem_capacity * 15 / 16 - llama.weight_bytes("fp16"))
                    // llama.kv_bytes_per_token("fp16"))  # inline ECC keeps 1/16
    requests = chat_workload(N_REQUESTS, rate_per_s=RATE_PER_S, seed=0)
    load_start = os.getloadavg()
    seconds: dict[str, list[float]] = {p: [] for p in POLICIES}
    runs = {}
    for _ in range(REPEATS):
        for policy in POLICIES:
            s, runs[policy] = run_once(requests, policy, kv_tokens)
            seconds[policy].append(s)
    results = {p: describe(runs[p], seconds[p]) for p in POLICIES}
    rows = "\n".join(
        f"| {p} | {r['median_s']:.2f} s | {r['requests_per_s']:,.0f} | "
        f"{'yes' if r['within_budget'] else 'NO'} | {r['iterations']:,} | {r['preemptions']:,} | "
        f"{r['mean_in_flight']:.0f} | {r['kv_utilization']:.0%} | "
        f"{r['simulated_makespan_s']:,.0f} s | {r['simulated_throughput_tok_s']:,.0f} |"
        for p, r in results.items())
    summary = (
        f"# Serving simulator speed: reservation and paged KV memory\n\n"
        f"{N_REQUESTS:,} chat-like requests (ShareGPT means, Poisson {RATE_PER_S:g}/s), "
        f"continuous batching (max_batch {MAX_BATCH}), KV memory {kv_tokens:,} tokens "
        f"(paged: blocks of {BLOCK_SIZE}), roofline step time of Llama 2 7B fp16 on an A10. "
        f"Median of {REPEATS} alternating runs, each building the step-time model and "
        f"simulating; budget {BUDGET_S:g} s per policy.\n\n"
        "| KV memory | median time | requests/s | within 2 s | iterations | preemptions | "
        "mean in flight | KV utilization | simulated makespan | simulated output tok/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\nLoad average (1, 5, 15 min) at the start: "
        f"{tuple(round(x, 2) for x in load_start)}.")
    write("simulator_speed", {"requests": N_REQUESTS, "rate_per_s": RATE_PER_S,
                              "max_batch": MAX_BATCH, "block_size": BLOCK_SIZE,
                              "kv_capacity_tokens": kv_tokens, "budget_s": BUDGET_S,
                              "load_average_at_start": load_start, "policies": results},
          summary)


if __name__ == "__main__":
    main()
