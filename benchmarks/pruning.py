"""Pruning and contextual sparsity measured: what removing weights buys in speed and costs in loss.

1. Structured against unstructured pruning of the trained target's FFNs at equal sparsity s
   (the fraction of FFN weights removed): unstructured (magnitude and Wanda masks, zeros
   left in dense tensors) against structured (whole neurons removed, a smaller
   `Transformer`). For each: validation loss on a fixed slice, and the decode tokens/s of one
   batch-1 step at position 128, timed in alternating rounds; beside it the speedup the
   step's bytes predict (`step_costs` of the pruned config over the dense one's).
2. The gathered sparse FFN against the dense one, at the activation sparsity measured on the
   trained ReLU model: for one decode token, W_down[:, active] relu(W_up[active] x) against
   the dense two matmuls (`llmperf.measured.sparsity.GatheredFFN`), on one layer of the trained
   model and on a Llama-sized synthetic ReLU FFN (d_model 4096, d_ff 11008, random weights, the
   active set drawn at the measured sparsity); predicted time ratio from the bytes of
   `llmperf.analytic.sparsity.sparse_ffn_cost`.

CPU, fp32 (the trained models' dtype); on a GPU the same script runs there.
Run: .venv/bin/python benchmarks/pruning.py
"""
import statistics

import torch
from _common import write

import llmperf as lp
from llmperf.analytic.sparsity import gathered_ffn_cost, pruned_config, sparse_ffn_cost
from llmperf.measured.measure import benchmark, measure_decode
from llmperf.measured.model import MLP
from llmperf.measured.pruning import prune, prune_structured, weight_sparsity
from llmperf.measured.sparsity import GatheredFFN, trace_ffn
from llmperf.trained import evaluate, load
from llmperf.trained.corpus import split_text
from llmperf.trained.load import validation_tokens

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SPARSITIES = (0.25, 0.5, 0.75)
EVAL_WINDOWS, CONTEXT, ROUNDS, STEPS = 16, 128, 5, 20
torch.manual_seed(0)


def decode_rates(models: dict) -> dict:
    """Median decode tokens/s of each model over ROUNDS alternating rounds."""
    samples = {name: [] for name in models}
    for _ in range(ROUNDS):
        for name, m in models.items():
            samples[name].append(measure_decode(m, CONTEXT, steps=STEPS).tokens_per_s)
    return {name: statistics.median(s) for name, s in samples.items()}


def pruning_rows(target, val, calib) -> list[dict]:
    dense_bytes = target.model.step_costs("decode", 1, CONTEXT).total.bytes
    rows = []
    for s in SPARSITIES:
        d_ff = round(target.config.d_ff * (1 - s))
        models = {"dense": target.model,
                  "unstructured magnitude": prune(target.model, s, "magnitude", ffn_only=True),
                  "unstructured wanda": prune(target.model, s, "wanda", calibration=calib,
                                              ffn_only=True),
                  "structured neurons": prune_structured(target.model, calib, d_ff)}
        rates = decode_rates(models)
        small_bytes = lp.step_costs(pruned_config(target.config, d_ff), "decode", 1, CONTEXT,
                                    dtype="fp32").total.bytes
        for name, m in models.items():
            structured = name.startswith("structured")
            rows.append({
                "ffn_sparsity": s, "method": name,
                "measured_ffn_sparsity": (1 - d_ff / target.config.d_ff) if structured
                else weight_sparsity(m, ffn_only=True),
                "params": m.num_parameters(), "nonzero_params": int(sum(
                    (p != 0).sum() for p in m.parameters())),
                "val_loss_nats": evaluate(m, val, max_windows=EVAL_WINDOWS).loss_nats,
                "decode_tokens_per_s": rates[name],
                "speedup_measured": rates[name] / rates["dense"],
                "speedup_predicted_from_bytes": dense_bytes / small_bytes if structured else 1.0,
            })
    return rows


def gathered_rows(relu, val) -> list[dict]:
    trace = trace_ffn(relu.model, val[:4 * 256].reshape(4, 256))
    sparsity = float(torch.cat(trace.sparsity()).mean())
    rows = []
    layer = relu.model.layers[1].feed_forward
    big = lp.ModelConfig(name="relu-ffn-4096", n_layers=1, d_model=4096, n_heads=32,
                         d_ff=11008, vocab_size=1, ffn_kind="mlp", activation="relu")
    synthetic = MLP(big.d_model, big.d_ff, "relu", bias=False)
    cases = [("trained relu, layer 2", relu.config.with_(n_layers=1), layer,
              trace.inputs[1][:1], trace.active(1)[0].nonzero().squeeze(1))]
    n_active = round(big.d_ff * (1 - sparsity))
    cases.append(("synthetic 4096 x 11008", big, synthetic, torch.randn(1, big.d_model),
                  torch.randperm(big.d_ff)[:n_active].sort().values))
    with torch.inference_mode():
        for name, cfg, mlp, x, active in cases:
            mlp.requires_grad_(False)
            dense_fn = (lambda m=mlp, x=x: m.w2(torch.relu(m.w1(x))))
            gathered = GatheredFFN(mlp)
            sparse_fn = (lambda f=gathered, x=x, a=active: f(x, a))
            d, g = [], []
            for _ in range(ROUNDS):
                d.append(benchmark(dense_fn, warmup=2, repeat=STEPS).median_s)
                g.append(benchmark(sparse_fn, warmup=2, repeat=STEPS).median_s)
            s_here = 1 - len(active) / cfg.d_ff
            dense_c = sparse_ffn_cost(cfg, 0.0, 1, "fp32")
            sparse_c = sparse_ffn_cost(cfg, s_here, 1, "fp32")
            rows.append({"ffn": name, "d_model": cfg.d_model, "d_ff": cfg.d_ff,
                         "sparsity": s_here, "dense_s": statistics.median(d),
                         "gathered_s": statistics.median(g),
                         "speedup_measured": statistics.median(d) / statistics.median(g),
                         "speedup_predicted_from_bytes": dense_c.bytes / sparse_c.bytes,
                         "speedup_predicted_with_the_copy": dense_c.bytes / gathered_ffn_cost(
                             cfg, s_here, "fp32").bytes,
                         "dense_bytes": dense_c.bytes, "oracle_bytes": sparse_c.bytes})
    return rows, sparsity


def main() -> None:
    target, relu = load("target", device=DEVICE), load("relu", device=DEVICE)
    val = validation_tokens(target.tokenizer).to(DEVICE)
    train = target.tokenizer.encode_tensor(split_text("train")).to(DEVICE)
    calib = train[:8 * 256].reshape(8, 256)
    prows = pruning_rows(target, val, calib)
    grows, sparsity = gathered_rows(relu, val)
    lines = ["# Pruning and contextual sparsity", "",
             f"Structured against unstructured pruning of the target's FFNs: validation loss "
             f"on {EVAL_WINDOWS} windows of 256 tokens, batch-1 decode at position {CONTEXT} "
             f"({DEVICE}, fp32, medians of {ROUNDS} alternating rounds of {STEPS} steps).", "",
             "| FFN sparsity | method | params | non-zero params | val loss (nats) | "
             "decode tok/s | speedup | predicted from bytes |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in prows:
        lines.append(f"| {r['ffn_sparsity']:.0%} | {r['method']} | {r['params']:,} | "
                     f"{r['nonzero_params']:,} | {r['val_loss_nats']:.4f} | "
                     f"{r['decode_tokens_per_s']:.0f} | {r['speedup_measured']:.2f} | "
                     f"{r['speedup_predicted_from_bytes']:.2f} |")
    lines += ["", f"Gathered sparse FFN against dense, one decode token, at the trained ReLU "
              f"model's mean activation sparsity ({sparsity:.1%}):", "",
              "| FFN | sparsity | dense | gathered | speedup | predicted, oracle bytes | "
              "predicted, with the gather's copy |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in grows:
        lines.append(f"| {r['ffn']} | {r['sparsity']:.1%} | {lp.format_seconds(r['dense_s'])} | "
                     f"{lp.format_seconds(r['gathered_s'])} | {r['speedup_measured']:.2f} | "
                     f"{r['speedup_predicted_from_bytes']:.2f} | "
                     f"{r['speedup_predicted_with_the_copy']:.2f} |")
    lines += ["", "Unstructured masks leave the tensors dense: the same matmuls run, so their "
              "speedup stays near 1 whatever the sparsity. Removing whole neurons makes every "
              "FFN matmul narrower; at batch 1 the step is bound by its bytes and by "
              "per-operator overhead, so the measured speedup trails the bytes' prediction on "
              "a small model. The gathered FFN copies the active rows of W_up (index_select) "
              "before multiplying them, so it moves three times the oracle's bytes for W_up "
              "(read, write, read again; `llmperf.analytic.sparsity.gathered_ffn_cost`); "
              "W_down^T's "
              "rows are summed in place (embedding_bag). A fused kernel (Deja Vu's) reads both "
              "in place. On the trained layer (1 MB of weights) the time is per-operator "
              "overhead, not bytes."]
    write("pruning", {"device": DEVICE, "eval_windows": EVAL_WINDOWS, "context": CONTEXT,
                      "pruning": prows, "measured_activation_sparsity": sparsity,
                      "gathered_ffn": grows}, "\n".join(lines))


if __name__ == "__main__":
    main()
