"""Tensor-parallel decode on this machine: a step's time split into compute and communication.

The reference model ref-small (fp32, untrained weights) decodes greedily NEW_TOKENS tokens
after a PROMPT-token prompt, at batch 1 and 8, with `llmperf.measured.tensor_parallel.
run_tensor_parallel`: on 1 rank with 1 thread, on 1 rank with every core's thread, and on 2
ranks (gloo, one thread each, Megatron-style: two all-reduces of batch x d_model fp32 numbers
per layer). Per configuration: the median decode step, the median time inside all-reduces
(rank 0; with gloo that includes waiting for the other rank) and the rest, over ROUNDS
interleaved rounds (a busy moment hits every configuration), each the median over its steps.
The tokens of every run are checked equal to single-process `generate`.

Predicted communication per step: 2 x layers all-reduces, each `llmperf.collective_time(
"all_reduce", batch x d_model x 4, 2, link)` with the link fitted to this machine's gloo
all-reduces by `benchmarks/collectives.py` (read from its results file, when there is one).

Run: .venv/bin/python benchmarks/tensor_parallel.py [--quick]
(--quick: batch 1, 8 new tokens, one round, printed and not written, as a smoke test.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
from _common import RESULTS, write  # also puts the checkout on sys.path

from llmperf.analytic.collectives import collective_time
from llmperf.hardware import Link
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer
from llmperf.measured.tensor_parallel import run_tensor_parallel
from llmperf.units import format_seconds

MODEL, PROMPT, NEW_TOKENS, BATCHES, ROUNDS = "ref-small", 32, 32, (1, 8), 5
QUICK = {"new_tokens": 8, "batches": (1,), "rounds": 1}
CONFIGS = (("1 rank, 1 thread", 1, 1), (f"1 rank, {os.cpu_count()} threads", 1, None),
           ("2 ranks, 1 thread each", 2, None))


def fitted_all_reduce_link(world_size: int) -> Link | None:
    """The gloo all-reduce link that benchmarks/collectives.py fitted, if it has run."""
    path = RESULTS / "collectives.json"
    if not path.exists():
        return None
    for f in json.loads(path.read_text())["fits"]:
        if (f["op"], f["world_size"]) == ("all_reduce", world_size):
            return Link("gloo all_reduce (fitted)", 2 * f["one_way_bytes_per_s"], f["alpha_s"],
                        source="benchmarks/results/collectives.json")
    return None


def measure(model, batch: int, new_tokens: int, rounds: int) -> list[dict]:
    prompt = torch.randint(0, model.config.vocab_size, (batch, PROMPT),
                           generator=torch.Generator().manual_seed(batch))
    reference = generate(model, prompt, new_tokens).tokens
    runs = {name: [] for name, _, _ in CONFIGS}
    for _ in range(rounds):
        for name, world_size, threads in CONFIGS:
            run = run_tensor_parallel(model, world_size, prompt, new_tokens, threads=threads)
            if not torch.equal(run.tokens, reference):
                raise RuntimeError(f"{name}: tokens differ from single-process generate")
            runs[name].append(run)
    link = fitted_all_reduce_link(2)
    rows = []
    for name, world_size, _ in CONFIGS:
        r = runs[name]
        predicted = (r[0].all_reduces_per_step
                     * collective_time("all_reduce", r[0].all_reduce_bytes, world_size, link)
                     if link is not None and world_size > 1 else None)
        rows.append({"config": name, "batch": batch, "world_size": world_size,
                     "threads": r[0].threads,
                     "step_s": statistics.median(x.decode.step_s for x in r),
                     "communication_s": statistics.median(x.decode.communication_s for x in r),
                     "compute_s": statistics.median(x.decode.compute_s for x in r),
                     "predicted_communication_s": predicted,
                     "all_reduces_per_step": r[0].all_reduces_per_step,
                     "all_reduce_bytes": r[0].all_reduce_bytes,
                     "launch_wall_s": statistics.median(x.wall_s for x in r),
                     "launch_startup_s": statistics.median(x.startup_s for x in r)})
    return rows


def summary(rows, new_tokens: int, rounds: int, load_start) -> str:
    lines = ["# Tensor-parallel decode: compute and communication per step", "",
             f"{MODEL} (fp32), prompt {PROMPT} tokens, {new_tokens} new tokens, greedy; "
             f"medians over {rounds} interleaved rounds. Tokens equal single-process "
             "`generate` in every run.", "",
             "| batch | configuration | step | in all-reduce | rest | predicted all-reduce "
             "| all-reduces x bytes | launch (wall) |", "|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        predicted = (format_seconds(r["predicted_communication_s"])
                     if r["predicted_communication_s"] is not None else "")
        lines.append(f"| {r['batch']} | {r['config']} | {format_seconds(r['step_s'])} | "
                     f"{format_seconds(r['communication_s'])} | {format_seconds(r['compute_s'])} "
                     f"| {predicted} | {r['all_reduces_per_step']} x {r['all_reduce_bytes']} B "
                     f"| {format_seconds(r['launch_wall_s'])} |")
    lines += ["", "Load average (1, 5, 15 min) at the start: "
              f"{tuple(round(x, 2) for x in load_start)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 1, 8 new tokens, 1 round, nothing written")
    quick = parser.parse_args().quick
    new_tokens, batches, rounds = ((QUICK["new_tokens"], QUICK["batches"], QUICK["rounds"])
                                   if quick else (NEW_TOKENS, BATCHES, ROUNDS))
    load_start = os.getloadavg()
    model = Transformer(MODEL, max_seq_len=PROMPT + new_tokens, seed=0)
    rows = [row for b in batches for row in measure(model, b, new_tokens, rounds)]
    text = summary(rows, new_tokens, rounds, load_start)
    data = {"model": MODEL, "prompt": PROMPT, "new_tokens": new_tokens, "rounds": rounds,
            "rows": rows, "load_average_start": load_start}
    if quick:
        json.dumps(data)
        print(text + "\n(--quick: benchmarks/results/tensor_parallel.* left as they were)")
        return
    write("tensor_parallel", data, text)


if __name__ == "__main__":
    main()
