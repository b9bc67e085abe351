"""How fast the serving simulator runs: 10,000 chat-like requests, continuous batching,
the roofline step time of Llama 2 7B (fp16) on an A10.

The budget is 2 s on 2 CPU cores. The KV memory is the A10's after the weights; the
Poisson rate is set above what the instance serves, so it stays busy and a queue builds.
"""
from __future__ import annotations

import time

import numpy as np
from _common import write  # also puts the checkout on sys.path

import llmperf as lp
from llmperf.serving import RooflineStepTime, chat_workload, simulate

N_REQUESTS, RATE_PER_S, MAX_BATCH, REPEATS = 10_000, 20.0, 256, 5


def main() -> None:
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    kv_tokens = int((a10.mem_capacity * 15 / 16 - llama.weight_bytes("fp16"))
                    // llama.kv_bytes_per_token("fp16"))  # inline ECC keeps 1/16
    requests = chat_workload(N_REQUESTS, rate_per_s=RATE_PER_S, seed=0)
    seconds, run = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        step = RooflineStepTime(llama, a10, dtype="fp16")
        run = simulate(requests, policy="continuous", max_batch=MAX_BATCH, step_time=step,
                       kv_capacity_tokens=kv_tokens)
        seconds.append(time.perf_counter() - start)
    median_s = float(np.median(seconds))
    data = {"requests": N_REQUESTS, "rate_per_s": RATE_PER_S, "max_batch": MAX_BATCH,
            "kv_capacity_tokens": kv_tokens, "iterations": len(run.iterations),
            "seconds": seconds, "median_s": median_s,
            "requests_per_s": N_REQUESTS / median_s,
            "simulated_makespan_s": run.makespan_s,
            "simulated_throughput_tok_s": run.throughput_tok_s,
            "mean_running": float(np.mean([len(i.decode) + len(i.prefill)
                                           for i in run.iterations]))}
    summary = (f"# Serving simulator speed\n\n{N_REQUESTS:,} chat-like requests (ShareGPT "
               f"means, Poisson {RATE_PER_S:g}/s), continuous batching (max_batch {MAX_BATCH}, "
               f"KV {kv_tokens:,} tokens), roofline step time of Llama 2 7B fp16 on an A10: "
               f"{len(run.iterations):,} iterations, {data['mean_running']:.0f} requests per "
               f"iteration on average.\n\nMedian of {REPEATS} runs: {median_s:.2f} s "
               f"({data['requests_per_s']:,.0f} requests/s); budget 2 s.\n\nSimulated: "
               f"makespan {run.makespan_s:,.0f} s, {run.throughput_tok_s:,.0f} output tokens/s.")
    write("simulator_speed", data, summary)


if __name__ == "__main__":
    main()
