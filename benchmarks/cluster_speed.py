"""How fast the cluster simulator runs: 10,000 requests over 4 replicas, under each router.

10,000 chat-like requests (ShareGPT means, Poisson arrivals at 4 times the rate that
`simulator_speed.py` gives one instance, so each replica is about as busy), continuous
batching, paged KV memory (blocks of 16, preemption by recompute) of what the weights leave
on an A10, the roofline step time of Llama 2 7B (fp16) on it. The same requests go through
`simulate_cluster` under "round_robin", "least_loaded" and "prefix"; the prefix router needs
token ids, so there each request's prompt gets synthetic ids that begin with one of 8
system prompts of 64 tokens (8 applications, each request drawn at random from them; lengths
and arrivals unchanged), and the replicas cache prompt prefixes (prefix_caching=True).
Each timing includes building the step-time model (its caches start cold) and the whole
`simulate_cluster` call.

The budget is 3 s per router on this machine (2 CPU cores, possibly shared: the load
average is recorded). Repeats alternate the routers, so a busy moment hits all of them;
medians are reported.

Run: .venv/bin/python benchmarks/cluster_speed.py [--quick]
(--quick: 500 requests, one repeat, printed and not written, as a smoke test.)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
from _common import write  # also puts the checkout on sys.path

import llmperf as lp
from llmperf.serving import RooflineStepTime, chat_workload
from llmperf.serving.cluster import ROUTERS, simulate_cluster

N_REQUESTS, REPLICAS, RATE_PER_S, MAX_BATCH, BLOCK_SIZE, REPEATS = 10_000, 4, 80.0, 256, 16, 3
QUICK_REQUESTS = 500
SYSTEM_PROMPTS, SYSTEM_TOKENS, VOCAB = 8, 64, 32_000
BUDGET_S = 3.0


def with_prompt_ids(requests, seed: int = 0):
    """The same requests, each prompt's ids one of the system prompts (at random) then ids
    of its own."""
    rng = np.random.default_rng(seed)
    systems = [tuple(int(t) for t in rng.integers(0, VOCAB, SYSTEM_TOKENS))
               for _ in range(SYSTEM_PROMPTS)]
    return [dataclasses.replace(r, prompt_ids=systems[rng.integers(SYSTEM_PROMPTS)][
        :r.prompt_tokens] + tuple(int(t) for t in rng.integers(
            0, VOCAB, max(0, r.prompt_tokens - SYSTEM_TOKENS)))) for r in requests]


def run_once(requests, router: str, kv_tokens: int):
    """Seconds to build the step-time model and simulate the cluster; the run."""
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    caching = {"prefix_caching": True} if router == "prefix" else {}
    start = time.perf_counter()
    step = RooflineStepTime(llama, a10, dtype="fp16")
    run = simulate_cluster(requests, REPLICAS, router, policy="continuous",
                           max_batch=MAX_BATCH, step_time=step, kv_capacity_tokens=kv_tokens,
                           kv_memory="paged", block_size=BLOCK_SIZE, **caching)
    return time.perf_counter() - start, run


def describe(run, seconds: list[float], n: int) -> dict:
    median_s = float(np.median(seconds))
    return {"seconds": seconds, "median_s": median_s, "requests_per_s": n / median_s,
            "within_budget": median_s <= BUDGET_S, "iterations": len(run.iterations),
            "requests_per_replica": run.requests_served(), "preemptions": run.preemptions,
            "simulated_makespan_s": run.makespan_s,
            "simulated_throughput_tok_s": run.throughput_tok_s,
            "ttft_p50_s": run.percentile("ttft_s", 50), "ttft_p99_s": run.percentile("ttft_s", 99)}


def summary(results: dict, n: int, repeats: int, kv_tokens: int, load_start) -> str:
    rows = "\n".join(
        f"| {k} | {r['median_s']:.2f} s | {r['requests_per_s']:,.0f} | "
        f"{'yes' if r['within_budget'] else 'NO'} | {r['iterations']:,} | "
        f"{r['requests_per_replica']} | {r['preemptions']:,} | "
        f"{r['simulated_makespan_s']:,.0f} s | {r['ttft_p50_s']:.2f} / {r['ttft_p99_s']:.2f} s |"
        for k, r in results.items())
    return (
        f"# Cluster simulator speed: {REPLICAS} replicas, each router\n\n"
        f"{n:,} chat-like requests (ShareGPT means, Poisson {RATE_PER_S:g}/s), continuous "
        f"batching (max_batch {MAX_BATCH}), paged KV memory of {kv_tokens:,} tokens a replica "
        f"(blocks of {BLOCK_SIZE}), roofline step time of Llama 2 7B fp16 on an A10. The prefix "
        f"router's requests carry ids beginning with one of {SYSTEM_PROMPTS} system prompts of "
        f"{SYSTEM_TOKENS} tokens, and its replicas cache prefixes. Median of {repeats} "
        f"alternating runs, each building the step-time model and simulating; budget "
        f"{BUDGET_S:g} s per router.\n\n"
        "| router | median time | requests/s | within 3 s | iterations | requests per replica "
        "| preemptions | simulated makespan | simulated TTFT p50 / p99 |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\nLoad average (1, 5, 15 min) at the start: "
        f"{tuple(round(x, 2) for x in load_start)}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_REQUESTS} requests, 1 repeat, nothing written")
    quick = parser.parse_args().quick
    n, repeats = (QUICK_REQUESTS, 1) if quick else (N_REQUESTS, REPEATS)
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    kv_tokens = lp.requests_that_fit(a10.usable_capacity(), llama.weight_bytes("fp16"),
                                     llama.kv_bytes_per_token("fp16"))
    chat = chat_workload(n, rate_per_s=RATE_PER_S, seed=0)
    workloads = {router: with_prompt_ids(chat) if router == "prefix" else chat
                 for router in ROUTERS}
    load_start = os.getloadavg()
    seconds: dict[str, list[float]] = {router: [] for router in ROUTERS}
    runs = {}
    for _ in range(repeats):
        for router in ROUTERS:
            s, runs[router] = run_once(workloads[router], router, kv_tokens)
            seconds[router].append(s)
    results = {router: describe(runs[router], seconds[router], n) for router in ROUTERS}
    text = summary(results, n, repeats, kv_tokens, load_start)
    if quick:
        print(text)
        return
    write("cluster_speed", {"requests": n, "replicas": REPLICAS, "rate_per_s": RATE_PER_S,
                            "max_batch": MAX_BATCH, "block_size": BLOCK_SIZE,
                            "kv_capacity_tokens": kv_tokens, "system_prompts": SYSTEM_PROMPTS,
                            "system_tokens": SYSTEM_TOKENS,
                            "budget_s": BUDGET_S, "load_average_at_start": load_start,
                            "routers": results}, text)


if __name__ == "__main__":
    main()
