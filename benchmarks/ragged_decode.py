"""Padded against ragged decode: one decode step of a batch whose contexts differ.

One decode step of BATCH requests (ref-small, random weights, fp32, one torch thread), each
writing its new token after its context and attending to it, for three spreads of context
lengths with the same longest: all equal, spread uniformly, and one long among short ones.
Layouts:

- padded: the batch as (B, 1) rows, every row reading as many keys as the longest
  (`KVCache.slots`, and `PagedKVCache.view`, which gathers every row's blocks padded);
- ragged: one `llmperf.measured.varlen.RaggedBatch`, each request reading its own context,
  from the contiguous cache (a view of its row) or the paged pool, piece by piece (eager) or
  with every decode in one compiled gather-and-attend (`decode="compiled"`).

The paged pool's blocks are interleaved, as a busy engine leaves them (block j of every
request before block j + 1 of any). Each step's time includes building its batch
description on the host. "KV read" is what attention must read: B * longest tokens padded,
the sum of the contexts ragged, times `ModelConfig.kv_bytes_per_token("fp32")`; "predicted"
is `llmperf.serving.RooflineStepTime` (standard attention, fp32) on this machine's measured
roofline (`measure_host`, median of a run before and one after), with those KV tokens.
Every layout's logits are checked against the padded contiguous one's.

Run: .venv/bin/python benchmarks/ragged_decode.py   (--quick: a smoke run, small sizes)
"""
import argparse
import json
import statistics

import torch
from _common import write

from llmperf.measured.cache import KVCache, PagedKVCache
from llmperf.measured.host import measure_host, median_host
from llmperf.measured.model import Transformer
from llmperf.measured.timing import benchmark
from llmperf.measured.varlen import RaggedBatch
from llmperf.serving import BlockAllocator, RooflineStepTime
from llmperf.serving.paging import blocks_needed
from llmperf.serving.scheduler import Batch

MODEL, BATCH, LONGEST, SHORT, BLOCK, ROUNDS, REPEAT, THREADS = (
    "ref-small", 16, 1024, 32, 16, 5, 5, 1)
QUICK = dict(BATCH=4, LONGEST=96, SHORT=8, ROUNDS=1, REPEAT=2)


def print_only(name: str, data: dict, summary: str) -> None:
    """A smoke run's report: printed (its data checked to serialise), not written."""
    json.dumps(data)
    print(summary + f"\n(--quick: benchmarks/results/{name}.* left as they were)")


def spreads(batch: int, longest: int, short: int) -> dict[str, list[int]]:
    """Context lengths (tokens each request holds after this step) with the same longest."""
    step = (longest - short) / (batch - 1)
    return {"equal": [longest] * batch,
            "uniform": [round(short + i * step) for i in range(batch)],
            "one long": [longest] + [short] * (batch - 1)}


def interleaved_pool(model: Transformer, contexts: list[int], block: int,
                     kv_dtype: str | None = None) -> PagedKVCache:
    """Sequences 0..B-1 holding contexts[i] tokens, block j of every one before block j + 1
    of any, so no sequence's blocks are consecutive in the pool."""
    alloc = BlockAllocator(sum(blocks_needed(c, block) for c in contexts), block)
    for i, c in enumerate(contexts):
        alloc.allocate(i, min(c, block))
    for j in range(1, blocks_needed(max(contexts), block)):
        for i, c in enumerate(contexts):
            if c > j * block:
                alloc.append(i, min(block, c - j * block))
    return PagedKVCache(model, alloc, kv_dtype)


def decode_pieces(contexts: list[int]) -> list[tuple[int, int, int]]:
    """One decode per request: request i writes position contexts[i] - 1 and reads 0..that."""
    return [(i, c - 1, 1) for i, c in enumerate(contexts)]


def ragged_step(model: Transformer, cache, pieces: list[tuple[int, int, int]],
                decode: str = "per_piece"):
    """One ragged forward pass over `pieces` (seq, start, tokens), its batch built each time."""
    tokens = torch.zeros(1, sum(n for _, _, n in pieces), dtype=torch.long)

    def step() -> torch.Tensor:
        batch = RaggedBatch(cache, pieces, decode)
        return model(tokens, batch.positions, batch, last_only=True)
    return step


def padded_steps(model: Transformer, rows: KVCache, pool: PagedKVCache, contexts: list[int]):
    """One padded decode step through each store: rows (B, 1), every one reading max keys."""
    B, longest = len(contexts), max(contexts)
    tokens, starts = torch.zeros(B, 1, dtype=torch.long), [c - 1 for c in contexts]
    start_pos = torch.tensor(starts)
    return {"padded, contiguous":
            lambda: model(tokens, start_pos, rows.slots(range(B), longest))[:, -1],
            "padded, paged":
            lambda: model(tokens, start_pos, pool.view(range(B), starts, 1))[:, -1]}


def layouts(model: Transformer, contexts: list[int], block: int) -> dict:
    rows = KVCache(model, len(contexts), max(contexts))
    pool = interleaved_pool(model, contexts, block)
    pieces = decode_pieces(contexts)
    return {**padded_steps(model, rows, pool, contexts),
            "ragged, contiguous": ragged_step(model, rows, pieces),
            "ragged, paged": ragged_step(model, pool, pieces),
            "ragged, contiguous, compiled": ragged_step(model, rows, pieces, "compiled"),
            "ragged, paged, compiled": ragged_step(model, pool, pieces, "compiled")}


def predicted_s(model: Transformer, host, contexts: list[int], kv_tokens: int) -> float:
    """RooflineStepTime of one decode step of len(contexts) requests reading kv_tokens keys."""
    step = RooflineStepTime(model.config, host, dtype="fp32", attention="standard")
    return step.iteration_s(Batch(iteration=0, prefill=(), decode=tuple(range(len(contexts))),
                                  decode_kv_tokens=kv_tokens, admitted=()))


def measure(sizes: dict, model: Transformer) -> dict:
    """Median step seconds of every layout and spread over interleaved rounds, and the
    largest difference of each layout's logits from the padded contiguous one's."""
    cases = {(s, name): fn for s, contexts in spreads(sizes["BATCH"], sizes["LONGEST"],
                                                      sizes["SHORT"]).items()
             for name, fn in layouts(model, contexts, BLOCK).items()}
    with torch.no_grad():
        outputs = {k: fn() for k, fn in cases.items()}  # warms up; compiles once
        times = {k: [] for k in cases}
        for _ in range(sizes["ROUNDS"]):
            for k, fn in cases.items():
                times[k].append(benchmark(fn, warmup=1, repeat=sizes["REPEAT"]).median_s)
    error = {k: float((outputs[k] - outputs[(k[0], "padded, contiguous")]).abs().max())
             for k in cases}
    return {k: {"step_s": statistics.median(v), "max_abs_logit_difference": error[k]}
            for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    sizes = dict(BATCH=BATCH, LONGEST=LONGEST, SHORT=SHORT, ROUNDS=ROUNDS, REPEAT=REPEAT)
    sizes.update(QUICK if args.quick else {})
    torch.set_num_threads(THREADS)
    model = Transformer(MODEL, max_seq_len=max(sizes["LONGEST"], 128))
    hosts = [measure_host(["fp32"], quick=args.quick, progress=False)]
    results = measure(sizes, model)
    hosts.append(measure_host(["fp32"], quick=args.quick, progress=False))
    host = median_host(hosts)
    per_token = model.config.kv_bytes_per_token("fp32")
    rows, table = [], []
    for s, contexts in spreads(sizes["BATCH"], sizes["LONGEST"], sizes["SHORT"]).items():
        for (spread, name), r in results.items():
            if spread != s:
                continue
            padded = name.startswith("padded")
            kv_tokens = len(contexts) * max(contexts) if padded else sum(contexts)
            row = {"spread": s, "layout": name, "contexts": contexts, "kv_tokens_read": kv_tokens,
                   "kv_bytes_read": kv_tokens * per_token,
                   "predicted_step_s": predicted_s(model, host, contexts, kv_tokens), **r}
            rows.append(row)
            table.append(f"| {s} | {name} | {row['kv_bytes_read'] / 2**20:.1f} MiB | "
                         f"{r['step_s'] * 1e3:.2f} ms | {row['predicted_step_s'] * 1e3:.2f} ms | "
                         f"{r['max_abs_logit_difference']:.1e} |")
    speedups = {s: results[(s, "padded, contiguous")]["step_s"]
                / results[(s, "ragged, contiguous")]["step_s"] for s in spreads(2, 2, 1)}
    summary = (
        f"# Padded against ragged decode\n\n"
        f"{MODEL} (fp32, random weights), {THREADS} torch thread, one decode step of "
        f"{sizes['BATCH']} requests, longest context {sizes['LONGEST']} tokens, shortest "
        f"{sizes['SHORT']}; paged blocks of {BLOCK}, interleaved; medians of "
        f"{sizes['ROUNDS']} interleaved rounds of {sizes['REPEAT']} steps. Host: "
        f"{host.mem_bandwidth / 1e9:.1f} GB/s, {host.peak('fp32') / 1e9:.0f} GFLOP/s fp32 "
        f"(measure_host).\n\n"
        "| spread | layout | KV read | step | predicted | max logit difference |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(table) + "\n\n"
        "**Padded / ragged step time, contiguous cache: " + ", ".join(
            f"{s} {v:.2f}x" for s, v in speedups.items()) + ".**\n\n"
        "Equal contexts read the same keys either way; the wider the spread, the more keys "
        "the padded step reads that its rows then mask. The eager paged rows gather each "
        "request's scattered blocks into a new tensor at every layer (the padded view: "
        "every row padded to the longest); the compiled rows read the keys where they lie.\n")
    save = print_only if args.quick else write  # a smoke run leaves the results alone
    save("ragged_decode", {"model": MODEL, "threads": THREADS, "block_size": BLOCK, **sizes,
                            "kv_bytes_per_token": per_token,
                            "host_bandwidth_B_s": host.mem_bandwidth,
                            "host_fp32_flop_s": host.peak("fp32"), "rows": rows,
                            "padded_over_ragged_contiguous": speedups}, summary)


if __name__ == "__main__":
    main()
