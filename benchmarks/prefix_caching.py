"""Automatic prefix caching on the engine, beside the simulator.

ref-small, fp32, one thread, continuous batching with at most 16 requests, paged KV in
blocks of 16. Workload: 48 requests sharing a system prompt of S tokens (S = 64, 256, 448),
each with 16 to 64 tokens of its own, 16 output tokens, arriving as a Poisson process of
20 per second (`shared_prefix_workload`). Each S is served with and without
`prefix_caching`, in interleaved rounds. Reported per configuration: the hit rate (prompt
tokens served from the cache / prompt tokens), prompt tokens computed, median and p90 TTFT,
output tokens/s (medians over rounds, with the lowest and highest); and the simulator on the
same requests with the same memory policy and a LinearStepTime fitted to all the engine's
iterations: its hit rate (it must equal the engine's: one policy) and its median TTFT.

Run: .venv/bin/python benchmarks/prefix_caching.py   (--quick: a smoke run, small sizes)
"""
import argparse
import statistics

import torch
from _common import write

from llmperf.measured.engine import Engine
from llmperf.measured.model import Transformer
from llmperf.serving import (
    Fixed,
    Uniform,
    blocks_needed,
    fit_linear_step_time,
    shared_prefix_workload,
    simulate,
)

MODEL, MAX_BATCH, BLOCK, THREADS = "ref-small", 16, 16, 1
SIZES = dict(requests=48, systems=(64, 256, 448), rate_per_s=20.0, rounds=3)
QUICK = dict(requests=8, systems=(32, 64), rate_per_s=50.0, rounds=1)


def kv_capacity(requests) -> int:
    """KV slots for MAX_BATCH of the longest request in whole blocks, the engine's and the
    simulator's alike."""
    return MAX_BATCH * blocks_needed(max(r.total_tokens for r in requests) - 1, BLOCK) * BLOCK


def serve(model, requests, cached: bool):
    engine = Engine(model, MAX_BATCH, kv_memory="paged", block_size=BLOCK,
                    prefix_caching=cached, kv_capacity_tokens=kv_capacity(requests))
    return engine.run(requests), engine.step_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    sizes = QUICK if args.quick else SIZES
    torch.set_num_threads(THREADS)
    model = Transformer(MODEL, max_seq_len=1024)
    loads = {s: shared_prefix_workload(sizes["requests"], s, Uniform(16, 64), Fixed(16),
                                       rate_per_s=sizes["rate_per_s"], seed=1,
                                       vocab_size=model.config.vocab_size)
             for s in sizes["systems"]}
    serve(model, loads[sizes["systems"][0]][:4], True)  # warm-up
    runs, samples = {}, []
    for _ in range(sizes["rounds"]):
        for s, requests in loads.items():
            for cached in (False, True):
                run, steps = serve(model, requests, cached)
                runs.setdefault((s, cached), []).append(run)
                samples += steps
    try:
        fit = fit_linear_step_time(samples)
    except ValueError:  # too few iterations from idle to price waking: fit without it
        fit = fit_linear_step_time([sample[:3] for sample in samples])
    rows, table = [], []
    for (s, cached), results in runs.items():
        sim = simulate(loads[s], "continuous", MAX_BATCH, fit, kv_memory="paged",
                       block_size=BLOCK, prefix_caching=cached,
                       kv_capacity_tokens=kv_capacity(loads[s]))
        r = results[0]
        hits = [x.prefix_hit_rate for x in results]  # wall-clock arrivals: checked per round
        ttft = [x.percentile("ttft_s", 50) for x in results]
        row = {"system_tokens": s, "prefix_caching": cached, "hit_rate": statistics.median(hits),
               "hit_rate_per_round": hits,
               "prompt_tokens": r.prompt_tokens,
               "prompt_tokens_computed": r.prompt_tokens - r.cached_prompt_tokens,
               "ttft_p50_s": ttft, "ttft_p90_s": [x.percentile("ttft_s", 90) for x in results],
               "throughput_tok_s": [x.throughput_tok_s for x in results],
               "simulated_hit_rate": sim.prefix_hit_rate,
               "simulated_ttft_p50_s": sim.percentile("ttft_s", 50)}
        rows.append(row)
        table.append(
            f"| {s} | {'on' if cached else 'off'} | {statistics.median(hits):.0%} "
            f"[{min(hits):.0%} to {max(hits):.0%}] | "
            f"{row['prompt_tokens_computed']:,} of {r.prompt_tokens:,} | "
            f"{statistics.median(ttft) * 1e3:.1f} ms [{min(ttft) * 1e3:.1f} to "
            f"{max(ttft) * 1e3:.1f}] | {statistics.median(row['ttft_p90_s']) * 1e3:.1f} ms | "
            f"{statistics.median(row['throughput_tok_s']):,.0f} | "
            f"{sim.prefix_hit_rate:.0%} | {sim.percentile('ttft_s', 50) * 1e3:.1f} ms |")
    same_hits = all(h == r["simulated_hit_rate"] for r in rows for h in r["hit_rate_per_round"])
    summary = (
        "# Prefix caching: the engine beside the simulator\n\n"
        f"{MODEL}, fp32, {THREADS} thread, continuous, max_batch {MAX_BATCH}, paged KV in blocks "
        f"of {BLOCK}; {sizes['requests']} requests sharing a system prompt of S tokens, 16 to 64 "
        f"tokens of their own, 16 output tokens, Poisson {sizes['rate_per_s']:g}/s; "
        f"{sizes['rounds']} interleaved rounds (median [lowest to highest]). Simulator: "
        f"LinearStepTime fitted to all {len(samples)} engine iterations (base "
        f"{fit.base_s * 1e3:.2f} ms + {fit.per_token_s * 1e6:.1f} us/token + "
        f"{fit.per_kv_token_s * 1e6:.2f} us/KV token + {fit.wake_s * 1e3:.2f} ms from idle).\n\n"
        "| S | cache | hit rate | prompt tokens computed | TTFT p50 | TTFT p90 | output tok/s | "
        "simulated hit rate | simulated TTFT p50 |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(table)
        + f"\n\nEngine (every round) and simulator find the same hits in every configuration: "
        f"{same_hits}. Both hold the same KV capacity: {MAX_BATCH} of the longest request, in "
        "whole blocks.\n")
    if args.quick:
        print(summary + "\n(--quick: benchmarks/results/prefix_caching.* left as they were)")
        return
    write("prefix_caching", {"model": MODEL, "max_batch": MAX_BATCH, "block_size": BLOCK,
                             "threads": THREADS, "sizes": {k: list(v) if isinstance(v, tuple)
                                                           else v for k, v in sizes.items()},
                             "fit": vars(fit), "rows": rows}, summary)


if __name__ == "__main__":
    main()
