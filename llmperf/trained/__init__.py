"""Small models trained on CPython's documentation topics, for the optimization chapters.

`load("target")` returns a `Trained` with `.model` (a reference `Transformer` in eval mode),
`.tokenizer`, `.config` and `.val_loss`; names: target, draft, relu, moe, student,
student-distilled. `tools/train_models.py` rebuilds them all from the corpus.
"""
from .configs import NAMES, model_config
from .corpus import corpus_matches, corpus_text, split_text
from .evaluate import Agreement, Evaluation, agreement, evaluate
from .load import Trained, load, manifest, sample, validate, validation_tokens
from .tokenizer import CharTokenizer

__all__ = ["NAMES", "Agreement", "CharTokenizer", "Evaluation", "Trained", "agreement",
           "corpus_matches", "corpus_text", "evaluate", "load", "manifest", "model_config",
           "sample", "split_text", "validate", "validation_tokens"]
