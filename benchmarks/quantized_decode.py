"""Quantized decode: tokens/s and model bytes for fp32, bf16, int8 and int4 weights, batch 1.

Two models: the trained target (`llmperf.trained.load("target")`, 3.2 M parameters, small
enough to sit in the CPU's caches, so per-step overhead weighs) and ref-medium (untrained,
156 M parameters, 0.62 GB in fp32: beyond most CPUs' caches, so bytes dominate). Each variant
runs one decode step at position CONTEXT, timed in interleaved rounds (a busy moment on a
shared machine hits every variant), median of the rounds' medians.

Variants: the model in fp32 and in bf16; `llmperf.measured.quant.quantize_model` with int8 per
channel and int4 in groups of 32 and 128 (PyTorch's packed kernels, bf16 activations inside
them), and int8 on the reference path (dequantize, then matmul); torchao's int8 weight-only
scheme (`Int8WeightOnlyConfig`, per-row scales like ours) on the bf16 model, eager and under
torch.compile, where torchao imports. Predicted speedup: bytes a step moves at fp32 over
bytes it moves in the variant (`llmperf.analytic.quant.predicted_decode_speedup`, from
`decode_step_bytes`), beside the measured one. On the target, also: validation loss and
next-token agreement with fp32, and the int8 weight error and scales, ours against torchao's.

Runs on the GPU when there is one, else on the CPU.
Run: .venv/bin/python benchmarks/quantized_decode.py
"""
import copy
import logging
import re
import statistics
import time
import warnings

import torch
from _common import write

from llmperf.analytic.quant import QuantScheme, decode_step_bytes, predicted_decode_speedup
from llmperf.measured.cache import KVCache
from llmperf.measured.measure import benchmark
from llmperf.measured.model import Transformer
from llmperf.measured.quant import kernels_used, model_bytes, quantize, quantize_model
from llmperf.trained import agreement, evaluate, load, validation_tokens
from llmperf.units import format_bandwidth, format_bytes

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CONTEXT, ROUNDS, REPEAT, EVAL_WINDOWS = 128, 5, 8, 16
# the layouts `quantize_model` holds: int8 scales in bf16; int4 scale and zero in bf16
INT8 = QuantScheme(8, None, "bf16")
INT8_REF = QuantScheme(8, None, "fp32")


def last_level_cache_bytes() -> int | None:
    """Size of the CPU's largest cache (Linux sysfs), or None where it cannot be read."""
    sizes = []
    for path in (f"/sys/devices/system/cpu/cpu0/cache/index{i}/size" for i in range(5)):
        try:
            with open(path) as f:
                number, unit = re.fullmatch(r"(\d+)([KMG]?)", f.read().strip()).groups()
        except (OSError, AttributeError):
            continue
        sizes.append(int(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])
    return max(sizes) if sizes else None


def int4(group: int) -> QuantScheme:
    return QuantScheme(4, group, "bf16", zero_points=True)


def torchao_int8(model: Transformer) -> tuple[Transformer | None, str]:
    """The bf16 model under torchao's int8 weight-only config, or None and why not."""
    try:
        logging.disable(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        q = copy.deepcopy(model).to(torch.bfloat16)
        quantize_(q, Int8WeightOnlyConfig())
        return q, f"torchao {torchao.__version__}"
    except Exception as e:  # not installed, or no build for this torch: say so
        return None, f"torchao unavailable: {type(e).__name__}: {e}"
    finally:
        logging.disable(logging.NOTSET)


def torchao_bytes(model: torch.nn.Module) -> int:
    """Bytes of a torchao model's state: int8 codes and scales of quantized weights."""
    total = 0
    for t in model.state_dict().values():
        parts = [getattr(t, n) for n in ("qdata", "scale") if hasattr(t, n)]
        total += sum(p.nbytes for p in parts) if parts else t.nbytes
    return total


def variants(base: Transformer, cfg) -> tuple[list[dict], str]:
    """Each variant: a name, the module, the step it runs, its scheme and activation dtype."""
    rows = [dict(name="fp32", model=base, scheme=None, dtype="fp32"),
            dict(name="bf16", model=copy.deepcopy(base).to(torch.bfloat16), scheme=None,
                 dtype="bf16")]
    for name, bits, group, scheme, kernel in (
            ("int8 per channel", 8, None, INT8, "auto"),
            ("int4 group 32", 4, 32, int4(32), "auto"),
            ("int4 group 128", 4, 128, int4(128), "auto"),
            ("int8, reference path", 8, None, INT8_REF, "reference")):
        start = time.perf_counter()
        q = quantize_model(copy.deepcopy(base), bits, group, kernel)
        rows.append(dict(name=name, model=q, scheme=scheme, dtype="fp32",
                         quantize_s=time.perf_counter() - start, kernels=kernels_used(q)))
    ao, note = torchao_int8(base)
    if ao is not None:
        rows.append(dict(name="torchao int8 (bf16 model)", model=ao, scheme=INT8, dtype="bf16",
                         peer=note))
        start = time.perf_counter()
        compiled = torch.compile(ao, fullgraph=True)
        rows.append(dict(name="torchao int8 + torch.compile", model=ao, fn=compiled,
                         scheme=INT8, dtype="bf16", peer=note, compile_s=None,
                         _start=start))
    for r in rows:
        r["step"] = step_fn(r["model"], r.get("fn"))
        if "_start" in r:  # the first call compiles
            r["step"]()
            r["compile_s"] = time.perf_counter() - r.pop("_start")
        r["bytes"] = torchao_bytes(r["model"]) if "peer" in r else model_bytes(r["model"])
        r["step_bytes"] = decode_step_bytes(cfg, r["scheme"], CONTEXT, r["dtype"])
        r["predicted_speedup"] = predicted_decode_speedup(cfg, r["scheme"], CONTEXT, r["dtype"])
    return rows, note


def step_fn(model, fn=None):
    """One batch-1 decode step at position CONTEXT, with a cache of the model's dtype."""
    cache = KVCache(model, 1, CONTEXT + 1)
    token = torch.randint(0, model.config.vocab_size, (1, 1), generator=torch.Generator()
                          .manual_seed(0)).to(model.device)
    f = model if fn is None else fn

    def step():
        with torch.inference_mode():
            return f(token, CONTEXT, cache, last_only=True)
    return step


def time_rounds(rows: list[dict]) -> None:
    samples = {r["name"]: [] for r in rows}
    for _ in range(ROUNDS):
        for r in rows:
            samples[r["name"]].append(benchmark(r["step"], warmup=2, repeat=REPEAT,
                                                device=DEVICE).median_s)
    for r in rows:
        r["rounds_s"] = samples[r["name"]]
        r["step_s"] = statistics.median(samples[r["name"]])
    base = rows[0]
    for r in rows:
        r["tokens_per_s"] = 1.0 / r["step_s"]
        r["measured_speedup"] = base["step_s"] / r["step_s"]
        r["achieved_bytes_per_s"] = r["step_bytes"] / r["step_s"]


def quality(rows: list[dict], tokens: torch.Tensor) -> None:
    """Validation loss and greedy agreement with the fp32 model, on EVAL_WINDOWS windows."""
    base = rows[0]["model"]
    for r in rows:
        if "fn" in r:
            continue
        r["val_loss_nats"] = evaluate(r["model"], tokens, max_windows=EVAL_WINDOWS).loss_nats
        r["agreement"] = agreement(r["model"], base, tokens, max_windows=EVAL_WINDOWS).greedy


def weight_errors(base: Transformer) -> dict | None:
    """RMS error of every linear weight under int8 per channel, ours against torchao's, and
    the ratio of torchao's per-row scales to ours; both on the fp32 weights."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception:  # reported with the speed rows already
        return None
    ao = copy.deepcopy(base)
    quantize_(ao, Int8WeightOnlyConfig())
    ao_weights = {n: m.weight for n, m in ao.named_modules() if isinstance(m, torch.nn.Linear)}
    ours_sq = ao_sq = count = 0.0
    ratios = []
    for name, m in base.named_modules():
        if isinstance(m, torch.nn.Linear):
            w, theirs = m.weight.detach(), ao_weights[name]
            ours = quantize(w, 8)
            ours_sq += float((w - ours.dequantize()).pow(2).sum())
            ao_sq += float((w - theirs.dequantize().float()).pow(2).sum())
            ratios.append(float((theirs.scale.float().flatten() / ours.scales.flatten()).median()))
            count += w.numel()
    return {"ours_rms": (ours_sq / count) ** 0.5, "torchao_rms": (ao_sq / count) ** 0.5,
            "scale_ratio_median": statistics.median(ratios)}


def run_model(label: str, base: Transformer, tokens: torch.Tensor | None) -> dict:
    rows, note = variants(base, base.config)
    time_rounds(rows)
    errors = None
    if tokens is not None:
        quality(rows, tokens)
        errors = weight_errors(base)
    keep = ("name", "bytes", "step_bytes", "step_s", "rounds_s", "tokens_per_s",
            "measured_speedup", "predicted_speedup", "achieved_bytes_per_s", "kernels",
            "quantize_s", "compile_s", "val_loss_nats", "agreement", "peer")
    return {"model": label, "params": base.config.param_count(), "torchao": note,
            "weight_errors": errors, "rows": [{k: r[k] for k in keep if k in r} for r in rows]}


def table(result: dict) -> str:
    quality_cols = "val_loss_nats" in result["rows"][0]
    head = ("| variant | model bytes | bytes per step | tokens/s | measured speedup | "
            "predicted from bytes | achieved bandwidth |")
    sep = "|---|---|---|---|---|---|---|"
    if quality_cols:
        head += " val loss (nats) | agreement with fp32 |"
        sep += "---|---|"
    lines = [head, sep]
    for r in result["rows"]:
        line = (f"| {r['name']} | {format_bytes(r['bytes'])} | {format_bytes(r['step_bytes'])} | "
                f"{r['tokens_per_s']:.1f} | {r['measured_speedup']:.2f}x | "
                f"{r['predicted_speedup']:.2f}x | {format_bandwidth(r['achieved_bytes_per_s'])} |")
        if quality_cols:
            loss = f"{r['val_loss_nats']:.4f}" if "val_loss_nats" in r else "-"
            agree = f"{r['agreement']:.1%}" if "agreement" in r else "-"
            line += f" {loss} | {agree} |"
        lines.append(line)
    return "\n".join(lines)


def summary_text(results: list[dict]) -> str:
    parts = [f"# Quantized decode, batch 1, position {CONTEXT} ({DEVICE})\n",
             "Measured speedup: fp32 step time over the variant's (median of "
             f"{ROUNDS} interleaved rounds of {REPEAT} steps). Predicted: bytes a step moves "
             "at fp32 over the variant's (`llmperf.analytic.quant.decode_step_bytes`: weights, "
             "scales, KV cache, activations), what a purely bandwidth-bound step would gain. "
             "Achieved bandwidth: those bytes over the measured step time.\n"]
    for res in results:
        parts.append(f"## {res['model']} ({res['params'] / 1e6:.1f} M parameters)\n")
        parts.append(table(res) + "\n")
        kernels = {r["name"]: r["kernels"] for r in res["rows"] if "kernels" in r}
        parts.append("Kernels per variant: " + "; ".join(f"{k}: {v}" for k, v in kernels.items())
                     + f". Peer: {res['torchao']}.")
        compile_s = [r["compile_s"] for r in res["rows"] if r.get("compile_s")]
        if compile_s:
            parts.append(f" torch.compile's first call took {compile_s[0]:.1f} s (not timed).")
        e = res.get("weight_errors")
        if e:
            parts.append(f" Weight error, int8 per channel: RMS {e['ours_rms']:.3e} (ours) and "
                         f"{e['torchao_rms']:.3e} (torchao); torchao's scales are "
                         f"{e['scale_ratio_median']:.4f} times ours (it divides max|w| by 127.5 "
                         "and uses codes -128 to 127, where ours divide by 127 and use -127 "
                         "to 127).")
        parts.append("\n")
    cache = last_level_cache_bytes()
    if cache is not None and DEVICE == "cpu":
        parts.append(f"The CPU reports a last-level cache of {format_bytes(cache, binary=True)}, "
                     "shared with whatever else runs on the host: a variant whose step reads "
                     "less may be served partly from cache rather than DRAM, where bytes cost "
                     "less still and the byte count predicts less.\n")
    parts.append("The torch.compile row compiles the whole step, so it also gains on the fixed "
                 "costs (norms, attention, kernel launches) that eager rows pay; compare it with "
                 "the eager rows for what compiling adds, not for the kernel alone.\n")
    parts.append(
        "Published, for scale (A100, batch 1, Llama 2 7B): gpt-fast 104.9 (bf16), 155.6 "
        "(int8) and 196.8 (int4, group 32) tokens/s, i.e. 1.48x and 1.88x "
        "(https://github.com/pytorch-labs/gpt-fast, README).\n")
    return "\n".join(parts)


def main() -> None:
    target = load("target", device=DEVICE)
    tokens = validation_tokens(target.tokenizer)
    medium = Transformer("ref-medium", device=DEVICE, max_seq_len=CONTEXT + 1).eval()
    results = [run_model("trained target", target.model, tokens.to(DEVICE)),
               run_model("ref-medium (untrained)", medium, None)]
    write("quantized_decode", {"device": DEVICE, "context": CONTEXT, "rounds": ROUNDS,
                               "last_level_cache_bytes": last_level_cache_bytes(),
                               "repeat": REPEAT, "eval_windows": EVAL_WINDOWS,
                               "results": results}, summary_text(results))


if __name__ == "__main__":
    main()
