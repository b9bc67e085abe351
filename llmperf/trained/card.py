"""The model card: a Markdown table of the trained models, written from manifest.json."""
from __future__ import annotations

from pathlib import Path


def _row(name: str, rec: dict) -> str:
    agree = rec.get("agreement_with_target")
    agree_s = f"{agree['greedy']:.3f} / {agree['overlap']:.3f}" if agree else "-"
    return (f"| {name} | {rec['params']:,} | {rec['active_params']:,} | "
            f"{rec['train_settings']['steps']} | {rec['train_seconds']:.0f} | "
            f"{rec['val_loss_nats']:.4f} | {rec['val_loss_bits']:.4f} | "
            f"{rec['val_perplexity']:.3f} | {agree_s} | `{rec['sha256'][:16]}` |")


def card_text(manifest: dict) -> str:
    c, m = manifest["corpus"], manifest["models"]
    lines = [
        "# Trained models of llmperf.trained",
        "",
        "Small Llama-style models (`llmperf.measured.model.Transformer`) trained on the",
        "character-level text of `pydoc_data.topics`, the documentation topics CPython ships",
        "(PSF License);",
        "nothing of that text is stored here. `from llmperf.trained import load; load(name)`.",
        "",
        f"- Corpus: Python {c['python']}, {c['chars']:,} characters, SHA-256 `{c['sha256']}`;",
        f"  first {c['train_fraction']:.0%} of the characters train, the rest validate.",
        f"- Tokenizer: characters, {manifest['tokenizer']['vocab_size']} ids (0 = unknown).",
        f"- Storage: {manifest['storage']}; torch {manifest['torch']}, "
        f"{manifest['threads']} CPU threads.",
        f"- Rebuild: `{manifest['command']}` (seeded; the steps and settings are in",
        "  manifest.json). Training seconds are wall time on a shared 2-core machine.",
        "- Validation loss: the whole validation split in windows of 256 tokens.",
        "- Agreement with target, on the validation split: greedy = how often the argmax",
        "  tokens agree; overlap = mean sum_x min(p, q), speculative sampling's acceptance at",
        "  temperature 1.",
        "- student and student-distilled: the same shape, steps and seed; the second learns",
        "  from the target too, loss (1 - alpha) CE + alpha T^2 KL(teacher^T || student^T) with",
        "  alpha 0.5 and T 2 (the settings are in manifest.json).",
        "- Training runs on CPU (fp32, AdamW, warm-up then cosine decay, batches of 8 windows",
        "  of 256 characters); the MoE trains with every expert computed densely and unchosen",
        "  ones weighted 0 (the same function as the routed forward it is evaluated with).",
        "",
        "| model | params | active params | steps | train s | val nats/token | val bits/token "
        "| val perplexity | agreement greedy / overlap | sha256 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(name, rec) for name, rec in m.items()]
    lines += ["", "Full SHA-256 of each file:", ""]
    lines += [f"- `{rec['file']}`: `{rec['sha256']}`" for rec in m.values()]
    return "\n".join(lines) + "\n"


def write_card(manifest: dict, path: Path) -> None:
    Path(path).write_text(card_text(manifest), encoding="utf-8")
