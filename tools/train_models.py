"""Rebuild the trained models of llmperf.trained from the corpus, deterministically, on CPU.

    python tools/train_models.py                      # every model, into llmperf/trained/weights
    python tools/train_models.py --models draft --steps 20 --out /tmp/w   # a quick check

Each model is seeded and trained with a fixed number of torch threads; the weights are saved
as fp16 safetensors (loaded back as fp32) beside manifest.json (configs, hashes, losses,
training times) and MODEL_CARD.md. Models named later may need ones named earlier: the
distilled student needs the target (trained in the same run, or already in --out), and the
draft and students are compared with the target.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from llmperf.trained import corpus
from llmperf.trained.card import write_card
from llmperf.trained.configs import NAMES, model_config
from llmperf.trained.evaluate import agreement, evaluate
from llmperf.trained.load import EVAL_SLICE_WINDOWS, WEIGHTS_DIR, load_model
from llmperf.trained.tokenizer import CharTokenizer
from llmperf.trained.train import TrainSettings, train

# Steps sized to the time a busy 2-core machine allowed: the ReLU and MoE variants had less
# than the target (more steps lower their losses; see the model card).
STEPS = {"target": 600, "draft": 300, "relu": 600, "moe": 600, "student": 150,
         "student-distilled": 150}
SEEDS = {name: i + 1 for i, name in enumerate(NAMES)}
LR = {"draft": 4e-3, "student": 4e-3, "student-distilled": 4e-3}
TEACHER = {"student-distilled": "target"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _settings(name: str, steps: int | None, batch: int) -> TrainSettings:
    return TrainSettings(steps=steps or STEPS[name], batch=batch, lr=LR.get(name, 3e-3),
                         seed=SEEDS[name], alpha=0.5 if name in TEACHER else 0.0)


def _save(model, out: Path, name: str) -> tuple[Path, torch.nn.Module]:
    path = out / f"{name}.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path, load_model(model.config, path)  # the saved (fp16-rounded) weights, in fp32


def _record(name, stored, path, result, settings, val_tokens) -> dict:
    full = evaluate(stored, val_tokens)
    part = evaluate(stored, val_tokens, max_windows=EVAL_SLICE_WINDOWS)
    return {
        "config": dataclasses.asdict(stored.config), "file": path.name, "sha256": _sha256(path),
        "params": stored.num_parameters(), "active_params": stored.config.active_param_count(),
        "train_seconds": round(result.seconds, 1), "train_settings": dataclasses.asdict(settings),
        "final_train_loss": round(sum(result.losses[-20:]) / len(result.losses[-20:]), 4),
        "val_loss_nats": full.loss_nats, "val_loss_bits": full.loss_bits,
        "val_perplexity": full.perplexity, "val_tokens": full.tokens,
        "val_slice_loss_nats": part.loss_nats,
    }


def _agreements(manifest: dict, models: dict, val_tokens: torch.Tensor) -> None:
    """Agreement with the target of each model that lacks it (all, when the target is new)."""
    if "target" not in models:
        return
    for name, model in models.items():
        if name != "target" and "agreement_with_target" not in manifest["models"][name]:
            a = agreement(model, models["target"], val_tokens)
            manifest["models"][name]["agreement_with_target"] = {
                "greedy": a.greedy, "overlap": a.overlap, "tokens": a.tokens}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=NAMES, default=list(NAMES))
    p.add_argument("--steps", type=int, default=None, help="override every model's steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    text = corpus.corpus_text()
    tok = CharTokenizer.from_text(corpus.split_text("train", text))
    tok.save(args.out / "tokenizer.json")
    train_tokens = tok.encode_tensor(corpus.split_text("train", text))
    val_tokens = tok.encode_tensor(corpus.split_text("validation", text))
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({
        "corpus": {"source": "pydoc_data.topics (PSF License)",
                   "sha256": corpus.corpus_sha256(text), "python": platform.python_version(),
                   "chars": len(text),
                   "train_fraction": corpus.TRAIN_FRACTION},
        "tokenizer": {"file": "tokenizer.json", "vocab_size": tok.vocab_size},
        "storage": "fp16 safetensors, loaded as fp32", "torch": torch.__version__,
        "threads": args.threads, "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "command": "python tools/train_models.py", "eval_slice_windows": EVAL_SLICE_WINDOWS,
    })
    manifest.setdefault("models", {})
    models = {name: load_model(model_config(name, tok.vocab_size), args.out / rec["file"])
              for name, rec in manifest["models"].items() if name not in args.models}
    _write(manifest, models, val_tokens, args.out)  # agreements of the models already there
    for name in (n for n in NAMES if n in args.models):
        teacher = models.get(TEACHER[name]) if name in TEACHER else None
        if name in TEACHER and teacher is None:
            teacher = load_model(model_config(TEACHER[name], tok.vocab_size),
                                 args.out / f"{TEACHER[name]}.safetensors")
        settings = _settings(name, args.steps, args.batch)
        result = train(model_config(name, tok.vocab_size), train_tokens, settings, teacher,
                       log=lambda s: print(s, flush=True))
        path, models[name] = _save(result.model, args.out, name)
        if name == "target":
            for rec in manifest["models"].values():
                rec.pop("agreement_with_target", None)
        manifest["models"][name] = _record(name, models[name], path, result, settings,
                                           val_tokens)
        print(name, json.dumps({k: v for k, v in manifest["models"][name].items()
                                if k.startswith(("val", "train_sec", "params"))}), flush=True)
        _write(manifest, models, val_tokens, args.out)
    _write(manifest, models, val_tokens, args.out)
    return manifest


def _write(manifest: dict, models: dict, val_tokens: torch.Tensor, out: Path) -> None:
    """Manifest and model card after each model, so an interrupted run keeps what it made."""
    _agreements(manifest, models, val_tokens)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    write_card(manifest, out / "MODEL_CARD.md")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main(sys.argv[1:])
    print(f"done in {time.perf_counter() - t0:.0f}s")
