"""The engine against a real server: vLLM's CPU build, on the same requests, weights and threads.

The workload is engine_vs_static's (32 requests arriving together, prompts uniform on 16..128
tokens, outputs exponential with mean 48, clipped at 160) on ref-small in fp32. The same
weights go to vLLM exported in Hugging Face's Llama format (config.json and model.safetensors,
through llmperf.measured.hf); vLLM gets the same prompt token ids (no tokenizer), generates
exactly each request's output length (ignore_eos, min_tokens = max_tokens), greedily, with
max_num_seqs equal to the engine's max_batch and as many threads as the engine. The engine
runs continuous batching; transformers' batched `generate` runs too, as in engine_vs_static.
The three alternate round by round, so a busy moment on a shared machine hits all of them.

vLLM is never imported here. It runs in its own virtual environment (make it with
`bash tools/vllm_env.sh`, which explains each step), as a separate process
(benchmarks/_vllm_worker.py) that loads the model once, then serves the whole workload each
time it is asked. If that environment is missing or vLLM fails, the results say exactly why
(the command and the end of vLLM's error) and the engine is compared with transformers alone.

What is comparable: throughput (output tokens / makespan, the makespan from the first arrival
to the last token of the run), TTFT and TPOT per request, all measured the same way on both
engines (seconds since the round started; vLLM's from its engine-core timestamps, which are
time.monotonic() in the same process as its model). Not counted: vLLM's start (loading and
torch.compile of the model, warm-up), reported apart. transformers' `generate` returns a batch
at once, so it has throughput only.

One torch thread by default (--threads): on a shared 2-core host, two threads waiting on each
other at every operator ran the engine ~15x slower while other jobs were running.

Run: .venv/bin/python benchmarks/vs_vllm.py [--quick] [--threads N] [--vllm-python PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import tempfile
from pathlib import Path

import torch
from _common import RESULTS, write
from engine_vs_static import MAX_BATCH, fmt, hf_generate, requests_and_prompts, spread

from llmperf.measured.engine import Engine
from llmperf.measured.hf import llama_config, to_hf_state_dict
from llmperf.measured.model import Transformer
from llmperf.serving import RequestResult, RunResult

MODEL, MAX_SEQ_LEN, REQUESTS, ROUNDS, THREADS = "ref-small", 512, 32, 5, 1
QUICK_REQUESTS, QUICK_ROUNDS = 8, 2
KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE: 131,072 tokens of ref-small, more than enough
WORKER = Path(__file__).resolve().parent / "_vllm_worker.py"
DEFAULT_VLLM_PYTHON = RESULTS.parent.parent / ".venv-vllm" / "bin" / "python"
START_TIMEOUT_S, ROUND_TIMEOUT_S = 900, 300
METRICS, PERCENTILES = ("ttft_s", "tpot_s"), (50, 90)
SHORT_NAMES = {"vllm": "vLLM", "transformers": "transformers"}


class VllmUnavailable(RuntimeError):
    """vLLM could not serve the workload here; the message says why."""


class VllmWorker:
    """vLLM serving one workload in its own environment's Python (`_vllm_worker.py`).

    Everything vLLM prints goes to `log_path`; its answers come on a pipe, one JSON line each.
    """

    def __init__(self, python: Path, spec_path: Path, log_path: Path) -> None:
        self.command = [str(python), str(WORKER), str(spec_path)]
        self.log_path = log_path
        if not python.exists():
            raise VllmUnavailable(f"no vLLM environment: {python} does not exist (make it with "
                                  "`bash tools/vllm_env.sh`, or pass --vllm-python)")
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.ready = self._answer(START_TIMEOUT_S, "loading the model")

    def _answer(self, timeout_s: float, doing: str) -> dict:
        """The worker's next JSON line; VllmUnavailable if it dies or stays silent."""
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            self.close()
            status = (f"exit status {self.process.returncode}" if readable else
                      f"no answer in {timeout_s:.0f} s")
            raise VllmUnavailable(f"vLLM failed while {doing} ({status}); command: "
                                  f"{' '.join(self.command)}; its last lines:\n"
                                  + log_tail(self.log_path))
        return json.loads(line)

    def serve(self) -> dict:
        """One round: every request served once, as `_vllm_worker.one_round` reports it."""
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self._answer(ROUND_TIMEOUT_S, "serving the requests")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def log_tail(path: Path, lines: int = 12) -> str:
    """The last non-empty lines of a log, each cut to 300 characters."""
    text = [line[:300] for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(text[-lines:])


def export_llama(model: Transformer, directory: Path):
    """Save `model` as a Hugging Face Llama directory; return transformers' copy of it."""
    import transformers

    config = llama_config(model.config)
    config.architectures = ["LlamaForCausalLM"]
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(to_hf_state_dict(model))
    hf.generation_config.eos_token_id = None  # force the requested lengths in `generate`
    hf.save_pretrained(directory)
    return hf


def vllm_run(requests, answer: dict) -> RunResult:
    """vLLM's round as a RunResult, so its metrics come from the same definitions."""
    results = tuple(RequestResult(request=r, slot=0, admitted_s=0.0, first_token_s=t, finish_s=f)
                    for r, t, f in zip(requests, answer["ttft_s"], answer["finish_s"]))
    return RunResult(policy="vllm", requests=results, iterations=())


def figures(run: RunResult) -> dict:
    """The figures one round of a server contributes."""
    return {"makespan_s": run.makespan_s, "throughput_tok_s": run.throughput_tok_s,
            **{f"{m}_p{q}": run.percentile(m, q) for m in METRICS for q in PERCENTILES}}


def agreement(outputs: list[list[int]], reference: list[list[int]]) -> dict:
    """Requests whose tokens equal the reference's, and the share of tokens before the first
    difference (greedy decoding: after one differing token the two continue differently)."""
    prefix = sum(next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), len(r))
                 for o, r in zip(outputs, reference))
    return {"equal_requests": sum(o == r for o, r in zip(outputs, reference)),
            "requests": len(reference),
            "tokens_before_first_difference": prefix / sum(len(r) for r in reference)}


def start_vllm(args, model_dir: Path, work: Path, requests, prompts):
    """A running VllmWorker, or the reason there is none."""
    spec = {"model_dir": str(model_dir), "prompts": prompts,
            "output_tokens": [r.output_tokens for r in requests], "threads": args.threads,
            "max_num_seqs": MAX_BATCH, "max_model_len": MAX_SEQ_LEN,
            "kv_cache_gib": KV_CACHE_GIB, "seed": 0}
    (work / "spec.json").write_text(json.dumps(spec))
    try:
        return VllmWorker(Path(args.vllm_python), work / "spec.json", work / "vllm.log"), None
    except VllmUnavailable as why:
        return None, str(why)


def measure(args, model, hf, worker, requests, prompts) -> tuple[dict, dict, str | None]:
    """Interleaved rounds: per server, its figures each round and its last tokens."""
    rounds: dict[str, list[dict]] = {"engine": [], "vllm": [], "transformers": []}
    outputs, failure = {}, None
    tokens = sum(r.output_tokens for r in requests)
    with torch.inference_mode():
        for _ in range(args.rounds):
            engine = Engine(model, MAX_BATCH, "continuous")
            rounds["engine"].append(figures(engine.run(requests, prompts)))
            outputs["engine"] = engine.outputs
            if worker is not None:
                try:
                    answer = worker.serve()
                except VllmUnavailable as why:
                    worker, failure = None, str(why)
                else:
                    rounds["vllm"].append({**figures(vllm_run(requests, answer)),
                                           "generate_call_s": answer["makespan_s"]})
                    outputs["vllm"] = answer["outputs"]
            seconds, outputs["transformers"] = hf_generate(hf, requests, prompts)
            rounds["transformers"].append({"makespan_s": seconds,
                                           "throughput_tok_s": tokens / seconds})
    return rounds, outputs, failure


def throughput_ratios(rounds: dict[str, list[dict]]) -> dict:
    """Each other server's throughput over the engine's, per round (neighbours in time)."""
    return {f"{SHORT_NAMES[k]} / engine": spread([o["throughput_tok_s"] / e["throughput_tok_s"]
                                                  for o, e in zip(v, rounds["engine"])])
            for k, v in rounds.items() if k != "engine"}


def summary_text(args, info: dict, stats: dict, ratios: dict, agree: dict, reason) -> str:
    """The markdown summary: the table, the agreement of tokens, what ran and under what."""
    import transformers

    names = {"engine": "llmperf engine (continuous)",
             "vllm": f"vLLM {info.get('vllm', '')} CPU, offline `LLM.generate`",
             "transformers": f"transformers {transformers.__version__} batched `generate`"}
    rows = "\n".join(
        f"| {names[k]} | {fmt(v['throughput_tok_s'], digits=1)} | "
        f"{fmt(v['makespan_s'], digits=2, unit=' s')} | "
        + " | ".join(fmt(v[f'{m}_p{q}'], 1e3, 1) if f"{m}_p{q}" in v else "-"
                     for m in METRICS for q in PERCENTILES) + " |" for k, v in stats.items())
    ratio_lines = "\n".join(f"- {what}: {fmt(r, digits=2, unit='x')}" for what, r in ratios.items())
    agree_lines = "\n".join(
        f"- {names[k]}: {a['equal_requests']}/{a['requests']} requests equal, "
        f"{a['tokens_before_first_difference']:.1%} of tokens before the first difference"
        for k, a in agree.items())
    if reason is None:
        ran = ("How the two engines run differs, and none of it is measured apart here: vLLM "
               "runs each iteration as one forward pass over all its requests' tokens, its model "
               "compiled by torch.compile, with its own C++ paged-attention kernels; see the "
               "engine's module docstring for how it runs.\n\n"
               f"vLLM ran in its own environment ({args.vllm_python}): torch {info['torch']}, "
               f"{info['torch_threads']} thread(s), kernels {info['kernels']}, compilation mode "
               f"{info['compilation_mode']}, block size {info['block_size']}, "
               f"max_num_batched_tokens {info['max_num_batched_tokens']}, engine core in the "
               f"same process. Its start, not counted above: {info['init_s']:.1f} s to load and "
               f"compile the model, then {info['warm_up_makespan_s']:.1f} s for a first, "
               "warm-up pass over the workload (new shapes compile).")
    else:
        why, _, log = reason.partition("\n")
        ran = f"**vLLM did not run here.** {why}" + (f"\n\n```\n{log}\n```" if log else "")
    return (
        f"# The engine against vLLM's CPU build and transformers' `generate`\n\n"
        f"{MODEL}, fp32, {args.threads} thread(s), {len(stats['engine']['makespan_s']['values'])}"
        f" interleaved rounds of {args.requests} requests arriving together "
        f"({info['prompt_tokens']} prompt tokens, {info['output_tokens']} output tokens), at "
        f"most {MAX_BATCH} in flight; same weights, same prompt token ids, same output lengths, "
        "greedy. Each figure is the median over the rounds, lowest and highest in brackets.\n\n"
        "| server | output tok/s | makespan | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms | "
        "TPOT p90 ms |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\n\nThroughput ratios, per round:\n\n{ratio_lines}\n\n"
        f"Greedy tokens against the engine's:\n\n{agree_lines}\n\n{ran}\n\n"
        "Load average (1, 5, 15 min) at the start: "
        f"{tuple(round(x, 2) for x in info['load_average_at_start'])}.\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_REQUESTS} requests, {QUICK_ROUNDS} rounds")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads of every server")
    parser.add_argument("--vllm-python", default=os.environ.get("VLLM_PYTHON",
                                                                str(DEFAULT_VLLM_PYTHON)),
                        help="the Python of the vLLM environment (tools/vllm_env.sh)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    args.requests, args.rounds = ((QUICK_REQUESTS, QUICK_ROUNDS) if args.quick
                                  else (REQUESTS, ROUNDS))
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model = Transformer(MODEL, max_seq_len=MAX_SEQ_LEN)
    requests, prompts = requests_and_prompts(model, n=args.requests)
    Engine(model, MAX_BATCH).run(requests[:4], prompts[:4])  # warm-up
    with tempfile.TemporaryDirectory(prefix="vs_vllm_") as tmp:
        work = Path(tmp)
        hf = export_llama(model, work / "model")
        worker, reason = start_vllm(args, work / "model", work, requests, prompts)
        try:
            rounds, outputs, failure = measure(args, model, hf, worker, requests, prompts)
        finally:
            if worker is not None:
                worker.close()
    reason = reason or failure
    if reason is not None:  # a vLLM that failed part way reports nothing
        del rounds["vllm"]
        outputs.pop("vllm", None)
    info = {"load_average_at_start": load_start,
            "prompt_tokens": sum(r.prompt_tokens for r in requests),
            "output_tokens": sum(r.output_tokens for r in requests),
            **(worker.ready if reason is None else {})}
    stats = {k: {m: spread([r[m] for r in v]) for m in v[0]} for k, v in rounds.items()}
    ratios = throughput_ratios(rounds)
    agree = {k: agreement(v, outputs["engine"]) for k, v in outputs.items() if k != "engine"}
    write("vs_vllm", {"model": MODEL, "max_batch": MAX_BATCH, "threads": args.threads,
                      "quick": args.quick, "n_rounds": args.rounds, "vllm_ran": reason is None,
                      "vllm_unavailable_reason": reason, "vllm_python": args.vllm_python,
                      "vllm": info, "rounds": rounds, "spread": stats,
                      "throughput_ratios": ratios, "token_agreement": agree},
          summary_text(args, info, stats, ratios, agree, reason))


if __name__ == "__main__":
    main()
