"""Fusion measured: the block's memory-bound chains and whole decode steps, eager vs torch.compile.

Chains: each of `llmperf.measured.kernels`' four chains (residual add + RMSNorm, SwiGLU gate, rotary
embedding on the queries, mask + scale + softmax of the scores), run exactly as
`llmperf.measured.model` writes them, on one layer of ref-small at a few token counts: eagerly (one
kernel per operator) and compiled by torch.compile (one generated kernel per fused group).
Bytes are those `llmperf.analytic.fusion.chain_cost` predicts for each side (eager: every kernel's
reads and writes; fused: what one kernel must still move); achieved bandwidth is predicted
bytes over the median time. Each (chain, size) is compiled afresh with static shapes; the
compile time (first call) is reported apart and never enters the timings. Eager and
compiled are timed in alternating rounds, so that a busy moment on a shared machine hits
both.

Decode steps: one batch-1 decode step of ref-tiny and ref-small at position 64, eager
against `torch.compile(model, fullgraph=True)`, with the bytes of the step's cost table
(`model.step_costs`).

Runs on the GPU when there is one (fp16), else on the CPU (fp32).
Run: .venv/bin/python benchmarks/fusion.py
"""
import statistics
import time

import torch
from _common import write

import llmperf as lp
from llmperf.analytic.fusion import chain_cost
from llmperf.measured.cache import KVCache
from llmperf.measured.kernels import chain_inputs
from llmperf.measured.measure import benchmark
from llmperf.measured.model import Transformer
from llmperf.units import format_bandwidth, format_bytes, format_seconds

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TDTYPE = torch.float16 if DEVICE == "cuda" else torch.float32
DTYPE = "fp16" if TDTYPE == torch.float16 else "fp32"
CHAIN_MODEL, TOKENS = "ref-small", (64, 512, 2048)
DECODE_MODELS, POSITION, MAX_SEQ = ("ref-tiny", "ref-small"), 64, 128
ROUNDS, REPEAT = 3, 5


def chain_elements(config, name: str, tokens: int) -> int:
    """Elements of the tensor each chain runs over, as `chain_inputs` builds it (rotary: the
    queries only; softmax: heads x tokens x tokens scores)."""
    return {"residual_norm": tokens * config.d_model, "swiglu_gate": tokens * config.d_ff,
            "rotary": tokens * config.q_dim,
            "masked_softmax": config.n_heads * tokens * tokens}[name]


def timed_rounds(eager, compiled) -> tuple[float, float]:
    """Median seconds of each side over ROUNDS alternating rounds of REPEAT calls."""
    e, c = [], []
    for _ in range(ROUNDS):
        e.append(benchmark(eager, warmup=1, repeat=REPEAT, device=DEVICE).median_s)
        c.append(benchmark(compiled, warmup=1, repeat=REPEAT, device=DEVICE).median_s)
    return statistics.median(e), statistics.median(c)


def chain_rows() -> list[dict]:
    config = lp.get_model(CHAIN_MODEL)
    rows = []
    for tokens in TOKENS:
        inputs = chain_inputs(config, tokens, device=DEVICE, dtype=TDTYPE)
        for name, chain in inputs.items():
            torch._dynamo.reset()  # a fresh compile per shape, so that its time is honest
            with torch.inference_mode():
                start = time.perf_counter()
                compiled = torch.compile(chain.fn, dynamic=False)
                compiled(*chain.args)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                compile_s = time.perf_counter() - start
                eager_s, fused_s = timed_rounds(lambda c=chain: c.fn(*c.args),
                                                lambda f=compiled, c=chain: f(*c.args))
            extra = config.d_model * lp.bytes_per_element(DTYPE) if name == "residual_norm" else 0
            cost = chain_cost(name, chain_elements(config, name, tokens), DTYPE, extra)
            rows.append({"chain": name, "tokens": tokens, "elements": cost.elements,
                         "bytes_eager": cost.unfused.bytes, "bytes_fused": cost.fused.bytes,
                         "eager_s": eager_s, "compiled_s": fused_s, "compile_s": compile_s,
                         "eager_bytes_per_s": cost.unfused.bytes / eager_s,
                         "compiled_bytes_per_s": cost.fused.bytes / fused_s,
                         "speedup": eager_s / fused_s,
                         "bytes_ratio": cost.unfused.bytes / cost.fused.bytes})
    return rows


def decode_rows() -> list[dict]:
    rows = []
    for name in DECODE_MODELS:
        torch._dynamo.reset()
        model = Transformer(name, device=DEVICE, dtype=TDTYPE, max_seq_len=MAX_SEQ)
        cache = KVCache(model, 1, MAX_SEQ)
        token = torch.zeros(1, 1, dtype=torch.long, device=DEVICE)
        with torch.inference_mode():
            start = time.perf_counter()
            compiled = torch.compile(model, fullgraph=True)
            compiled(token, POSITION, cache, last_only=True)
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            args = (token, POSITION, cache)
            eager_s, fused_s = timed_rounds(lambda m=model, a=args: m(*a, last_only=True),
                                            lambda m=compiled, a=args: m(*a, last_only=True))
        step_bytes = model.step_costs("decode", 1, POSITION).total.bytes
        rows.append({"model": name, "position": POSITION, "step_bytes": step_bytes,
                     "eager_s": eager_s, "compiled_s": fused_s, "compile_s": compile_s,
                     "eager_bytes_per_s": step_bytes / eager_s,
                     "compiled_bytes_per_s": step_bytes / fused_s, "speedup": eager_s / fused_s})
    return rows


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def summary_text(chains: list[dict], steps: list[dict], total_s: float) -> str:
    chain_table = "\n".join(row(
        r["chain"], r["tokens"], format_bytes(r["bytes_eager"]), format_bytes(r["bytes_fused"]),
        f"{r['bytes_ratio']:.2f}", format_seconds(r["eager_s"]), format_seconds(r["compiled_s"]),
        f"{r['speedup']:.2f}", format_bandwidth(r["eager_bytes_per_s"]),
        format_bandwidth(r["compiled_bytes_per_s"]), format_seconds(r["compile_s"]))
        for r in chains)
    step_table = "\n".join(row(
        r["model"], format_bytes(r["step_bytes"]), format_seconds(r["eager_s"]),
        format_seconds(r["compiled_s"]), f"{r['speedup']:.2f}",
        format_bandwidth(r["eager_bytes_per_s"]), format_bandwidth(r["compiled_bytes_per_s"]),
        format_seconds(r["compile_s"])) for r in steps)
    return (
        f"# Fusion: eager against torch.compile ({DEVICE}, {DTYPE})\n\n"
        "What this measures and how: the four memory-bound chains of one "
        f"{CHAIN_MODEL} layer (as `llmperf.measured.model` writes them) run eagerly, one kernel "
        "per operator, and compiled by `torch.compile`; bytes are those "
        "`llmperf.analytic.fusion.chain_cost` predicts for each side, achieved bandwidth is those "
        "bytes over the median time "
        f"({ROUNDS} alternating rounds of {REPEAT} calls). Compile time is the first call of "
        "a fresh compile, excluded from the timings; torch.compile caches generated code on "
        "disk, so a machine's first run compiles more slowly than later ones. Then a batch-1 "
        "decode step at position "
        f"{POSITION}, eager against `torch.compile(model, fullgraph=True)`, bytes from the "
        "model's step costs. Read the chains' speedup against their bytes ratio: near it "
        "when a chain is memory bound and large; above it when eager kernels are slow in "
        "themselves; below it when the tensors fit in the caches. A decode step of a small "
        "model gains from removing per-operator overhead, not bytes.\n\n"
        "## Chains\n\n"
        "| chain | tokens | bytes eager | bytes fused | bytes ratio | time eager | time compiled "
        "| speedup | eager GB/s | compiled GB/s | compile time |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{chain_table}\n\n"
        "## Decode step\n\n"
        "| model | bytes per step | time eager | time compiled | speedup | eager bandwidth "
        "| compiled bandwidth | compile time |\n|---|---|---|---|---|---|---|---|\n"
        f"{step_table}\n\n"
        f"Whole run: {total_s:.0f} s.\n")


def main() -> None:
    start = time.perf_counter()
    chains = chain_rows()
    steps = decode_rows()
    total_s = time.perf_counter() - start
    data = {"device": DEVICE, "dtype": DTYPE, "chain_model": CHAIN_MODEL, "tokens": list(TOKENS),
            "rounds": ROUNDS, "repeat": REPEAT, "chains": chains, "decode": steps,
            "total_s": total_s}
    write("fusion", data, summary_text(chains, steps, total_s))


if __name__ == "__main__":
    main()
