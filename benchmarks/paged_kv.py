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

Then the cost of paging itself, on one ragged batch (`llmperf.measured.varlen.RaggedBatch`,
the same model): an iteration of PREFILL_CHUNKS prompt chunks and DECODES decode tokens, all
in one forward pass, each reading its own context only, from the contiguous cache (each
request's keys are a view of its row), from a paged pool whose blocks are consecutive for
each request (read in place too), from one whose blocks are interleaved (eager: each
request's blocks gathered into a new tensor at every layer), and from that pool with the
decodes' keys read in place by the compiled gather-and-attend. "KV bytes moved" counts the
keys and values attention reads (`ModelConfig.kv_bytes_per_token`), plus, where blocks are
gathered, the gather's read and write of whole blocks; "predicted" is
`llmperf.serving.RooflineStepTime` of the iteration on this machine's measured roofline
(`measure_host`), plus the gather's bytes over its bandwidth.

Run: .venv/bin/python benchmarks/paged_kv.py   (--quick: a smoke run, small sizes)
"""
import argparse
import statistics

import torch
from _common import write
from ragged_decode import interleaved_pool, print_only, ragged_step

from llmperf import trained
from llmperf.analytic.quant import int8_kv_bytes_per_token
from llmperf.measured.cache import KVCache, PagedKVCache
from llmperf.measured.engine import Engine
from llmperf.measured.host import measure_host, median_host
from llmperf.measured.timing import benchmark
from llmperf.serving import BlockAllocator, RooflineStepTime, Uniform, workload
from llmperf.serving.paging import blocks_needed
from llmperf.serving.scheduler import Batch, Chunk

BUDGET_TOKENS, BLOCK, ROUNDS, THREADS, N = 2048, 16, 5, 1, 48
# the ragged batch: chunks of CHUNK tokens after CHUNK cached; decodes of contexts spread
# uniformly on 16..LONGEST
PREFILL_CHUNKS, CHUNK, DECODES, LONGEST, STEP_REPEAT = 2, 64, 14, 256, 10
QUICK = dict(N=8, ROUNDS=1, PREFILL_CHUNKS=1, CHUNK=16, DECODES=3, LONGEST=64, STEP_REPEAT=2)


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


def ragged_pieces(sizes: dict) -> list[tuple[int, int, int]]:
    """(seq, start, tokens): the prompt chunks, then the decodes, sequences 0, 1, ..."""
    chunks = [(i, sizes["CHUNK"], sizes["CHUNK"]) for i in range(sizes["PREFILL_CHUNKS"])]
    D, top = sizes["DECODES"], sizes["LONGEST"]
    contexts = [round(16 + (top - 16) * j / max(D - 1, 1)) for j in range(D)]
    return chunks + [(len(chunks) + j, c - 1, 1) for j, c in enumerate(contexts)]


def consecutive_pool(model, ends: list[int], block: int) -> PagedKVCache:
    """Sequences 0..S-1 holding ends[i] tokens, each in consecutive blocks."""
    alloc = BlockAllocator(sum(blocks_needed(e, block) for e in ends), block)
    for i, e in enumerate(ends):
        alloc.allocate(i, e)
    return PagedKVCache(model, alloc)


def same_ragged_batch(model, sizes: dict) -> tuple[list[dict], str]:
    """Step time, KV bytes moved and prediction of one ragged iteration in every store."""
    pieces = ragged_pieces(sizes)
    ends = [start + n for _, start, n in pieces]
    interleaved = interleaved_pool(model, ends, BLOCK)
    stores = {"contiguous": (KVCache(model, len(ends), max(ends)), "per_piece"),
              "paged, consecutive blocks": (consecutive_pool(model, ends, BLOCK), "per_piece"),
              "paged, interleaved blocks": (interleaved, "per_piece"),
              "paged, interleaved, compiled decodes": (interleaved, "compiled")}
    steps = {k: ragged_step(model, cache, pieces, decode) for k, (cache, decode) in stores.items()}
    hosts = [measure_host(["fp32"], quick=sizes["ROUNDS"] == 1, progress=False)]
    with torch.no_grad():
        ref = {k: f() for k, f in steps.items()}  # warms up; compiles once
        times = {k: [] for k in steps}
        for _ in range(sizes["ROUNDS"]):
            for k, f in steps.items():
                times[k].append(benchmark(f, warmup=1, repeat=sizes["STEP_REPEAT"]).median_s)
    hosts.append(measure_host(["fp32"], quick=sizes["ROUNDS"] == 1, progress=False))
    host = median_host(hosts)
    per_token = model.config.kv_bytes_per_token("fp32")
    attended = sum(ends) * per_token  # each piece reads its own keys and values once
    gathered = 2 * sum(blocks_needed(e, BLOCK) * BLOCK for e in ends) * per_token  # read + write
    chunks_gathered = 2 * sum(blocks_needed(s + n, BLOCK) * BLOCK
                              for _, s, n in pieces if n > 1) * per_token
    moved = {"contiguous": attended, "paged, consecutive blocks": attended,
             "paged, interleaved blocks": attended + gathered,
             "paged, interleaved, compiled decodes": attended + chunks_gathered}
    batch = Batch(iteration=0, prefill=tuple(Chunk(i, s, n, True) for i, s, n in pieces if n > 1),
                  decode=tuple(i for i, _, n in pieces if n == 1),
                  decode_kv_tokens=sum(s + 1 for _, s, n in pieces if n == 1), admitted=())
    base_s = RooflineStepTime(model.config, host, dtype="fp32",
                              attention="standard").iteration_s(batch)
    rows = [{"store": k, "step_s": statistics.median(times[k]), "kv_bytes_moved": moved[k],
             "predicted_step_s": base_s + (moved[k] - attended) / host.mem_bandwidth,
             "max_abs_logit_difference": float((ref[k] - ref["contiguous"]).abs().max())}
            for k in steps]
    table = "\n".join(
        f"| {r['store']} | {r['kv_bytes_moved'] / 2**20:.1f} MiB | {r['step_s'] * 1e3:.2f} ms | "
        f"{r['predicted_step_s'] * 1e3:.2f} ms | {r['step_s'] / rows[0]['step_s']:.2f}x | "
        f"{r['max_abs_logit_difference']:.1e} |" for r in rows)
    text = (
        f"## Paged against contiguous KV on one ragged batch\n\n"
        f"One forward pass: {sizes['PREFILL_CHUNKS']} prompt chunks of {sizes['CHUNK']} tokens "
        f"after {sizes['CHUNK']} cached, and {sizes['DECODES']} decodes with contexts spread "
        f"on 16..{sizes['LONGEST']} tokens ({len(pieces)} sequences, {sum(ends)} keys "
        f"attended); blocks of {BLOCK}; medians of {sizes['ROUNDS']} interleaved rounds of "
        f"{sizes['STEP_REPEAT']} steps. Host: {host.mem_bandwidth / 1e9:.1f} GB/s "
        f"(measure_host).\n\n"
        "| KV store | KV bytes moved | step | predicted | step / contiguous | "
        "max logit difference |\n|---|---|---|---|---|---|\n" + table + "\n\n"
        "The contiguous cache and the consecutive blocks are read where they lie; interleaved "
        "blocks are gathered, eagerly, into a new tensor per request and layer, which moves "
        "each block twice more (the cost a paged-attention kernel avoids); the compiled "
        "decodes read theirs in place, only the prompt chunks' blocks are still gathered.\n")
    return rows, text


def main() -> None:
    global N, ROUNDS  # the engine part's sizes, smaller in a smoke run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    sizes = dict(N=N, ROUNDS=ROUNDS, PREFILL_CHUNKS=PREFILL_CHUNKS, CHUNK=CHUNK,
                 DECODES=DECODES, LONGEST=LONGEST, STEP_REPEAT=STEP_REPEAT)
    sizes.update(QUICK if args.quick else {})
    torch.set_num_threads(THREADS)
    model = trained.load("target").model
    N, ROUNDS = sizes["N"], sizes["ROUNDS"]
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
        "cache's gather, at every layer, of each request whose blocks are scattered in the "
        "pool (a paged attention kernel reads them in place) also cost time here. The int8 "
        "rows' greedy tokens may differ from fp32's where the random prompts leave two "
        "tokens nearly tied.\n")
    batch_rows, batch_text = same_ragged_batch(model, sizes)
    save = print_only if args.quick else write  # a smoke run leaves the results alone
    save("paged_kv", {"model": "trained target", "threads": THREADS, "requests": N,
                      "budget_tokens": BUDGET_TOKENS, "int8_budget_tokens": int8_tokens,
                      "block_size": BLOCK, "max_len": max_len, "rounds": rounds,
                      "median": med, "ratios": ratios,
                      "requests_with_tokens_equal_to_contiguous": same,
                      "same_ragged_batch": {"sizes": sizes, "rows": batch_rows}},
         summary + "\n" + batch_text)


if __name__ == "__main__":
    main()
