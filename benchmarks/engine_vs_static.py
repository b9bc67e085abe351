"""Static against continuous (and chunked) batching on the engine, and transformers' generate.

One process, one workload: 32 requests arriving together, prompts uniform on 16..128 tokens,
outputs exponential (mean 48, clipped at 160), on ref-small in fp32 with the same prompts and
weights everywhere. The engine serves them under each policy with max_batch 16;
transformers' LlamaForCausalLM (same weights, via llmperf.measured.hf) runs batched `generate` on
the same requests in arrival order, 16 at a time, prompts left-padded, each batch generating
its longest output (it cannot stop a row early without an end-of-sequence token, so this is
static batching with padding). Throughput counts the requested output tokens only.
The runs alternate round by round, so a busy moment on a shared machine hits all of them.

The summary leads with the decomposition of the speedup over transformers: the static
engine against `generate` (the same static groups of 16, so the implementation: no padding,
finished rows dropped), then what scheduling adds on the same engine (continuous and chunked
over static). It reports TTFT and TPOT percentiles (p50, p90, p99) per policy, since
continuous batching buys its throughput partly with longer TPOT (newcomers' prefills stall
the running decodes), and every figure as the median over ROUNDS rounds with the lowest and
highest round beside it.

One torch thread: on a shared 2-core host, two threads waiting on each other at every
operator ran a decode step ~10x slower than one thread while other jobs were running.

Run: .venv/bin/python benchmarks/engine_vs_static.py
"""
import os
import statistics
import time

import torch
from _common import write

from llmperf.measured.engine import Engine
from llmperf.measured.hf import llama_config, to_hf_state_dict
from llmperf.measured.model import Transformer
from llmperf.serving import Exponential, Uniform, workload

MODEL, MAX_BATCH, TOKEN_BUDGET, ROUNDS, THREADS = "ref-small", 16, 128, 5, 1
POLICIES = (("static", None), ("continuous", None), ("chunked", TOKEN_BUDGET))
METRICS, PERCENTILES = ("ttft_s", "tpot_s"), (50, 90, 99)


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


def spread(values: list[float]) -> dict:
    """Median, lowest and highest of one figure over the rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def fmt(s: dict, scale: float = 1.0, digits: int = 0, unit: str = "") -> str:
    """'median [min-max]' of a spread, each times `scale`."""
    m, lo, hi = (f"{s[k] * scale:,.{digits}f}" for k in ("median", "min", "max"))
    return f"{m}{unit} [{lo}-{hi}]"


def main() -> None:
    import transformers

    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()
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
                    **{f"{m}_p{q}": run.percentile(m, q) for m in METRICS for q in PERCENTILES}})
            seconds, outputs["transformers"] = hf_generate(hf, requests, prompts)
            rounds["transformers"].append({"makespan_s": seconds,
                                           "throughput_tok_s": tokens / seconds})
    stats = {k: {m: spread([r[m] for r in v]) for m in v[0]} for k, v in rounds.items()}
    same = {k: sum(o == g for o, g in zip(outputs[k], outputs["continuous"])) for k in outputs}

    def ratio(num: str, den: str, metric: str = "throughput_tok_s") -> dict:
        # per round: the runs of one round are neighbours in time, so their ratio is fair
        return spread([a[metric] / b[metric] for a, b in zip(rounds[num], rounds[den])])

    ratios = {"static_over_transformers": ratio("static", "transformers"),
              "continuous_over_static": ratio("continuous", "static"),
              "chunked_over_static": ratio("chunked", "static"),
              "continuous_over_transformers": ratio("continuous", "transformers")}
    tpot_ratios = {f"p{q}": ratio("continuous", "static", f"tpot_s_p{q}") for q in PERCENTILES}
    steps = (
        ("static engine / transformers `generate`: the same static groups of "
         f"{MAX_BATCH}, without padding, finished rows dropped (the implementation)",
         "static_over_transformers"),
        ("continuous / static, both on the engine (what scheduling adds)",
         "continuous_over_static"),
        (f"chunked (budget {TOKEN_BUDGET}) / static, both on the engine",
         "chunked_over_static"),
        ("continuous / transformers `generate` (the two together)",
         "continuous_over_transformers"))
    decomposition = "\n".join(f"| {what} | {fmt(ratios[key], digits=2, unit='x')} |"
                               for what, key in steps)
    tput_rows = "\n".join(
        f"| {k} | {fmt(v['makespan_s'], digits=2, unit=' s')} | "
        f"{fmt(v['throughput_tok_s'], digits=1)} | "
        + (f"{v['iterations']['median']:.0f}" if "iterations" in v else "-")
        + f" | {same[k]}/{len(requests)} |" for k, v in stats.items())
    latency_rows = "\n".join(
        f"| {k} | {label} | "
        + " | ".join(fmt(stats[k][f"{m}_p{q}"], 1e3, digits) for q in PERCENTILES) + " |"
        for m, label, digits in (("tpot_s", "TPOT", 1), ("ttft_s", "TTFT", 0))
        for k, _ in POLICIES)
    cont_tput = ratios["continuous_over_static"]["median"]
    traded = cont_tput > 1 and tpot_ratios["p50"]["median"] > 1
    tpot_sentence = ("Continuous batching trades TPOT for throughput" if traded else
                     "In this run continuous batching did not trade TPOT for throughput")
    why = (" Two things lengthen its TPOT: its decode steps stay full, where a static group's "
           "shrink as its rows finish, and an iteration that admits a request also prefills "
           "that request's prompt, delaying the decode step of every running request."
           if traded else "")
    if stats["static"]["ttft_s_p50"]["median"] > stats["continuous"]["ttft_s_p50"]["median"]:
        why += (" Static batching pays in TTFT instead (median TTFT above continuous's): its "
                "later groups wait for the earlier ones to finish.")
    summary = (
        f"# Engine: static vs continuous batching, and transformers {transformers.__version__}"
        f" batched generate\n\n{MODEL}, fp32, {THREADS} thread, {len(requests)} requests at "
        f"time 0 ({sum(r.prompt_tokens for r in requests)} prompt tokens, {tokens} output "
        f"tokens), max_batch {MAX_BATCH}, chunked token_budget {TOKEN_BUDGET}; {ROUNDS} "
        "interleaved rounds, each figure the median over the rounds with the lowest and "
        "highest round in brackets. Load average (1, 5, 15 min) at the start: "
        f"{tuple(round(x, 2) for x in load_start)}.\n\n"
        "## Where the speedup over transformers comes from (output tokens/s, ratios per round)"
        "\n\n| step | ratio |\n|---|---|\n"
        f"{decomposition}\n\n"
        "## Throughput\n\n"
        "| run | makespan | output tok/s | iterations | tokens equal to continuous's |\n"
        f"|---|---|---|---|---|\n{tput_rows}\n\n"
        "## Latency per request, ms\n\n"
        "| policy | metric | p50 | p90 | p99 |\n|---|---|---|---|---|\n"
        f"{latency_rows}\n\n"
        f"{tpot_sentence}: per round, its TPOT over static's is "
        + ", ".join(f"{fmt(tpot_ratios[f'p{q}'], digits=2, unit='x')} at p{q}"
                    for q in PERCENTILES)
        + f", for {cont_tput:.2f}x static's throughput (medians).{why}\n\n"
        "transformers' rows are left-padded, so its greedy tokens may differ from the engine's "
        "by float rounding; the engine's policies give each request the tokens of running it "
        "alone (tested). transformers' `generate` returns a batch at once, so it has no "
        "per-request TTFT or TPOT here.\n")
    write("engine_vs_static", {"model": MODEL, "max_batch": MAX_BATCH, "threads": THREADS,
                               "token_budget": TOKEN_BUDGET, "n_rounds": ROUNDS,
                               "load_average_at_start": load_start, "rounds": rounds,
                               "spread": stats, "ratios": ratios,
                               "tpot_continuous_over_static": tpot_ratios,
                               "requests_with_tokens_equal_to_continuous": same,
                               "transformers": transformers.__version__}, summary)


if __name__ == "__main__":
    main()
