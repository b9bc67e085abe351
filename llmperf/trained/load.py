"""Loading a trained model with its tokenizer in one call: `load("target")`.

The weights are fp16 safetensors beside `manifest.json` (configs, SHA-256 of every file,
losses) in `llmperf/trained/weights`; a model is loaded in fp32 (or the dtype asked for), in
eval mode, with requires_grad False. A file whose hash differs from the manifest's is refused.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..measured.model import Transformer
from ..models import ModelConfig
from . import corpus
from .configs import CONTEXT, NAMES
from .evaluate import Evaluation, evaluate
from .tokenizer import CharTokenizer

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EVAL_SLICE_WINDOWS = 8  # the fixed slice (8 x 256 tokens) the tests evaluate on


@dataclass
class Trained:
    """A trained model, its tokenizer and what the manifest records about it."""

    name: str
    model: Transformer
    tokenizer: CharTokenizer
    config: ModelConfig
    val_loss: float           # nats per token on the whole validation split
    record: dict

    @property
    def val_loss_bits(self) -> float:
        return self.record["val_loss_bits"]


def manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The manifest of the weights folder: corpus, tokenizer, and one record per model."""
    path = Path(weights_dir) / "manifest.json"
    if not path.exists():
        raise ValueError(f"weights_dir has no manifest.json: {weights_dir}")
    return json.loads(path.read_text())


def load_model(config: ModelConfig, path: Path, dtype: str | torch.dtype = torch.float32,
               device: str = "cpu") -> Transformer:
    """A Transformer(config) with the weights of safetensors file `path`, in eval mode."""
    model = Transformer(config, device=device, dtype=dtype, max_seq_len=CONTEXT)
    model.load_state_dict(load_file(str(path)), strict=True)  # copies, casting to model dtype
    return model.eval()


@lru_cache(maxsize=8)
def _sha256(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(name: str, dtype: str | torch.dtype = torch.float32, device: str = "cpu",
         weights_dir: Path = WEIGHTS_DIR) -> Trained:
    """Trained model `name` (one of NAMES: target, draft, relu, moe, student,
    student-distilled), ready for inference, with its tokenizer and validation loss."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    info = manifest(weights_dir)
    if name not in info["models"]:
        raise ValueError(f"name {name!r} has no weights in {weights_dir}")
    rec = info["models"][name]
    path = Path(weights_dir) / rec["file"]
    if _sha256(path, path.stat().st_mtime_ns) != rec["sha256"]:
        raise ValueError(f"{path} does not match the SHA-256 in manifest.json")
    config = ModelConfig(**rec["config"])
    tok = CharTokenizer.load(Path(weights_dir) / info["tokenizer"]["file"])
    return Trained(name, load_model(config, path, dtype, device), tok, config,
                   rec["val_loss_nats"], rec)


def validation_tokens(tokenizer: CharTokenizer) -> torch.Tensor:
    """The validation split of the running Python's corpus, encoded. Warns when that corpus
    is not the one the models were trained on (another Python version): the losses then
    differ a little from the manifest's."""
    if not corpus.corpus_matches():
        warnings.warn("this Python's pydoc_data.topics differs from the training corpus "
                      f"(Python {corpus.TRAINED_PYTHON}); evaluating on this version's text",
                      stacklevel=2)
    return tokenizer.encode_tensor(corpus.split_text("validation"))


def validate(trained: Trained, max_windows: int | None = None) -> Evaluation:
    """Loss of a loaded model on the validation split (its first max_windows windows)."""
    return evaluate(trained.model, validation_tokens(trained.tokenizer),
                    max_windows=max_windows)


def sample(trained: Trained, prompt: str, max_new_tokens: int = 200,
           temperature: float = 0.8, top_k: int | None = None, seed: int = 0) -> str:
    """A continuation of `prompt` (greedy at temperature 0), decoded to text."""
    from ..measured.generate import generate

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    ids = trained.tokenizer.encode(prompt)[-CONTEXT // 2:]
    max_new = min(max_new_tokens, CONTEXT - len(ids) + 1)
    out = generate(trained.model, ids, max_new, temperature=temperature, top_k=top_k, seed=seed)
    return trained.tokenizer.decode(out.tokens[0])
